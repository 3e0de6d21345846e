"""Service configuration: typed, with defaults that work on a laptop CPU.

Sources, highest priority first: keyword arguments, ``LIC_*`` environment variables, an optional settings file
(``--settings FILE`` or ``LIC_SETTINGS_FILE``; ``.json``, ``.toml`` or a dotenv file with the same ``LIC_`` keys),
then the defaults below. Examples::

    LIC_MODELS='{"stf-small": [1, 4, 8]}' LIC_MAX_BATCH_SIZE=16 python -m service
    python -m service --settings deploy/service.toml       # max_batch_size = 16, device = "cuda" ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from model_store import registry
from model_store.container import FORMAT_VERSION
from model_store.refine import MAX_EFFORT

SETTINGS_FILE_ENV = "LIC_SETTINGS_FILE"


class ServiceSettings(BaseSettings):
    """Every knob of the service (env var = ``LIC_`` + the upper-cased field name)."""

    model_config = SettingsConfigDict(env_prefix="LIC_", extra="forbid", frozen=True)

    # -- what to serve -------------------------------------------------------------------------------------------
    weights_root: Path = Field(
        default=registry.WEIGHTS_ROOT, description="folder of <model>/<version>/manifest.json (model_store layout)"
    )
    models: Dict[str, List[int]] = Field(
        default_factory=dict,
        description="model id -> qualities to load warm; an empty list means all shipped qualities of that model, "
        "an empty mapping means every quality of the default model",
    )
    device: str = Field(default="auto", description="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1'")

    # -- batching ------------------------------------------------------------------------------------------------
    max_batch_size: int = Field(default=8, ge=1, le=256, description="most requests in one network pass")
    max_batch_delay_ms: float = Field(
        default=5.0, ge=0, le=10_000, description="longest the oldest queued request waits for companions"
    )
    queue_size: int = Field(
        default=64,
        ge=1,
        description="queued requests per (model, quality, op) before 429; at most queue_size + "
        "max_batch_size requests are admitted to one such path at a time (the rest get 429 before their body is "
        "decoded)",
    )
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After sent with 429 and 503")

    # -- limits --------------------------------------------------------------------------------------------------
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="deadline of a request from arrival; clients may shorten it per request"
    )
    request_timeout_per_megapixel_s: float = Field(
        default=4.0,
        ge=0,
        description="deadline per megapixel for large images: a request's deadline is the larger of "
        "request_timeout_s and this times the image's megapixels (a shorter X-Request-Timeout still wins), so the "
        "largest image max_pixels admits can finish (erstc-small compresses 12 MP in ~25 s on 2 cores: "
        "benchmarks/results/large_images.md); 0 = request_timeout_s for every size",
    )
    admission_by_cost: bool = Field(
        default=True,
        description="refuse at once (422 deadline_too_short) a request whose estimated time, from this server's "
        "own measured speed and the image size in its header, exceeds its deadline (service/cost.py)",
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="413 above this")
    max_pixels: int = Field(default=16_000_000, ge=1, description="422 above this (checked from headers first)")

    max_effort: int = Field(
        default=1,
        ge=0,
        le=MAX_EFFORT,
        description="highest encoder effort a request may ask for (POST /compress?effort=); effort > 0 searches for a "
        "better latent with the decoder's own networks (smaller files at equal quality, same decoder) and costs "
        "~10x (effort 1) to ~100x (effort 3) the network time of effort 0; 0 turns the feature off",
    )
    max_effort_pixels: int = Field(
        default=500_000,
        ge=1,
        description="images above this many pixels are refused effort > 0 (422 too_many_pixels): the search holds the "
        "network thread for its whole duration, ~50 s per megapixel at effort 1 on one CPU core "
        "(benchmarks/effort.py), so the default keeps a 768x512 photo inside the 30 s request deadline",
    )

    legacy_instances: int = Field(
        default=2,
        ge=0,
        description="older weight versions (or unserved qualities) kept loaded to decode streams they made; "
        "streams whose weights are installed always decode, this only bounds what stays in memory",
    )

    # -- access control (SECURITY.md) ----------------------------------------------------------------------------
    auth_tokens: Optional[SecretStr] = Field(
        default=None,
        description="bearer tokens, comma-separated, each 'token' or 'client-name:token'; with auth_tokens_file "
        "unset too, authentication is OFF (logged as a warning at startup)",
    )
    auth_tokens_file: Optional[Path] = Field(
        default=None,
        description="file with one 'token' or 'client-name:token' per line ('#' comments); re-read when it "
        "changes, so a rotated Kubernetes secret takes effect without a restart",
    )
    max_in_flight_per_client: int = Field(
        default=32,
        ge=0,
        description="requests one client (token name, else peer address) may have in flight before 429 "
        "client_busy; 0 = no cap",
    )

    max_pixels_in_flight_per_client: int = Field(
        default=64_000_000,
        ge=0,
        description="image pixels one client may have in flight (compress and decompress) before 429 client_busy: "
        "a cap on the work one client holds, whatever the sizes of its requests; 0 = no cap",
    )

    forwarded_allow_ips: Optional[str] = Field(
        default=None,
        description="proxies trusted to set X-Forwarded-For/-Proto (comma-separated IPs or CIDRs, '*' = any): "
        "behind a load balancer this makes the peer address, and so the per-client cap without auth, the real "
        "caller's; unset = headers ignored",
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="open connections + requests before uvicorn answers 503 at once; 0 = no limit (put a proxy "
        "with header timeouts in front, SECURITY.md)",
    )

    # -- threads and lifecycle -----------------------------------------------------------------------------------
    coding_threads: int = Field(
        default_factory=lambda: max(1, min(8, os.cpu_count() or 1)),
        ge=1,
        description="threads for per-image entropy coding and image decode/encode",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="torch intra-op threads of the network pass; 0 = auto: half the cores on CPU (the coding "
        "threads use the rest: 9.6 vs 7.3 images/s at 256x256 on 2 cores, and far more when another process "
        "takes a core), torch's default on CUDA",
    )
    tile_threads: int = Field(
        default=0,
        ge=0,
        description="threads that run the tiles of one image's transforms side by side (model_store/tiling.py); "
        "each runs one intra-op thread, so they do not spin-wait for busy cores as an OpenMP team does; "
        "0 = one per core",
    )
    coding_torch_threads: int = Field(
        default=1,
        ge=1,
        description="torch intra-op threads inside each coding thread; images are coded in parallel, so more "
        "only oversubscribes the cores",
    )
    stream_format_version: int = Field(
        default=FORMAT_VERSION,
        ge=1,
        le=FORMAT_VERSION,
        description="container version /compress writes; pin the older one while a rollout still has decoders that "
        "only read it (every decoder reads every older version)",
    )
    banded_hyper: bool = Field(
        default=True,
        description="code images with a side above 2560 px (a hyper-latent wider or taller than one band) with the banded "
        "hyperprior (stream flag bit 0): bounded memory on large photos; false while a rollout still has decoders "
        "that predate the flag (they refuse such streams)",
    )
    latent_crc: bool = Field(
        default=True,
        description="on the integer entropy path, fold the decoded latents into the stream's coder CRC (stream flag "
        "bit 1): a decoder whose means drift is an error, not a slightly different image; false while a rollout "
        "still has decoders that predate the flag (they refuse such streams)",
    )
    batch_invariant: bool = Field(
        default=True,
        description="run the network one image at a time inside a batch so batched requests get byte-identical "
        "streams and pixels (false: batched kernels, faster on a GPU, streams may differ in a few symbols)",
    )
    drain_timeout_s: float = Field(default=30.0, ge=0, description="graceful shutdown: longest wait for in-flight work")

    # -- server (used by ``python -m service``; the CLI's --host/--port override them) ---------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("models")
    @classmethod
    def _qualities_are_positive(cls, value: Dict[str, List[int]]) -> Dict[str, List[int]]:
        for model, qualities in value.items():
            if any(q < 1 for q in qualities):
                raise ValueError(f"qualities of {model} must be >= 1, got {qualities}")
        return {model: sorted(set(qualities)) for model, qualities in value.items()}

    def instances(self) -> List[Tuple[str, int]]:
        """The (model, quality) pairs to load, resolved against the weights root (raises UnknownModelError)."""
        shipped = registry.shipped_models(self.weights_root)
        wanted = self.models or {registry.default_model(self.weights_root): []}
        out = []
        for model, qualities in wanted.items():
            for quality in qualities or shipped.get(model, []):
                registry.resolve(model, quality, root=self.weights_root)  # a clear error now, not at first request
                out.append((model, quality))
            if not qualities and model not in shipped:
                registry.resolve(model, 1, root=self.weights_root)  # raises: unknown model
        return out

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def _file_source(settings_cls, path: Path) -> PydanticBaseSettingsSource:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return JsonConfigSettingsSource(settings_cls, json_file=path)
    if suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    return DotEnvSettingsSource(settings_cls, env_file=path)


def load_settings(settings_file: Optional[Path] = None, **overrides) -> ServiceSettings:
    """Settings from keyword overrides > environment > settings file (argument or ``LIC_SETTINGS_FILE``)."""
    path = settings_file or os.environ.get(SETTINGS_FILE_ENV)
    if not path:
        return ServiceSettings(**overrides)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} does not exist")

    class _WithFile(ServiceSettings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return init_settings, env_settings, _file_source(settings_cls, path)

    return ServiceSettings.model_validate(_WithFile(**overrides).model_dump())
