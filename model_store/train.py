"""One readable training entry point (nanoGPT-style): config dataclass, a loop, resumable checkpoints.

    python -m model_store.train --arch stf --preset small --quality 3 --steps 20000 --out runs/stf-small-q3
    python -m model_store.train ... --init-from runs/stf-small-q3/last.pt     # fine-tune another λ from a base
    python -m model_store.train --arch stf ... --init-from W.safetensors --teacher wacnn=W.safetensors  # distil
    python -m model_store.train export --arch stf --preset small --version v1 q1=runs/a/last.pt q2=...

Loss (Ballé et al.; the λ tables of each paper): ``λ·255²·MSE + bpp`` where bpp is the likelihood estimate
(additive-noise / STE proxy from the architecture's ``forward``), plus the entropy bottleneck's auxiliary
quantile loss on its own optimizer. Adam with linear warm-up and a step decay late in training, gradient
clipping, random multi-scale crops. Re-running the same command resumes from ``<out>/last.pt``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model_store.architectures.base import LearnedImageCodec, total_bpp
from model_store.architectures.registry import create_model, get_preset
from model_store.codec import canonical_copy, pad_to_multiple
from model_store.errors import UncodableLatentError, UnknownModelError


@dataclass
class TrainConfig:
    arch: str = "stf"
    preset: str = "small"
    quality: int = 3
    out: str = "runs/default"
    train_dir: str = "data/train"
    val_dir: str = "data/val"
    steps: int = 20_000
    batch_size: int = 8
    crop: int = 256
    scale_range: List[float] = field(default_factory=lambda: [1.0, 4.0])
    lr: float = 1e-4
    aux_lr: float = 1e-3
    warmup_steps: int = 500
    decay_at: float = 0.85  # fraction of steps after which lr drops by decay_factor
    decay_factor: float = 0.1
    clip_norm: float = 1.0
    lmbda: Optional[float] = None  # None: the preset's λ for this quality
    init_from: Optional[str] = None  # checkpoint to start from (another quality's run)
    #: ``OLD:NEW``: ``init_from`` is a narrower preset, grown into this one (model_store.widen; e.g. 24:48 for
    #: erstc-small's M 96 -> 192, the CAM head width)
    widen_unit: Optional[str] = None
    #: Distillation of the analysis transform, ``ARCH=WEIGHTS``: a trained model of another architecture with the
    #: same latent (channels, stride; same preset and quality) whose ``g_a(x)`` the student's ``g_a`` is pulled
    #: towards with ``distill_weight · mean((y - y_teacher)²)`` added to the RD loss, until ``distill_until``
    #: (the end of the run is pure RD). Why: a sibling that shares the teacher's entropy model (``stf-small`` from
    #: ``wacnn-small``, ``--init-from`` loads 77 % of it) otherwise learns its transforms from the RD loss alone,
    #: whose gradient through a random g_a is weak and noisy; regressing onto a latent the loaded entropy model
    #: already fits is a direct target, and g_s learns to invert it through the RD term.
    teacher: Optional[str] = None
    distill_weight: float = 1.0
    #: Progress (as for ``decay_at``) at which distillation stops; None: at the late lr decay. Why earlier: the
    #: CPU stf-small run's validation loss fell by a third within 500 steps of the decay, when distillation ended
    #: (it had held the student near the teacher's latent, which the student's own g_s/entropy model need not
    #: prefer); ending it while the lr is still high leaves room for the RD loss to move on.
    distill_until: Optional[float] = None
    seed: int = 0
    device: str = "auto"
    #: bf16 autocast for g_a/g_s (the rate path stays float32: architectures.base). On CUDA, and on CPUs with
    #: native bf16 (AVX512-BF16/AMX): 1.3x per step for wacnn-small at 8x128² on one core here (measured).
    amp: bool = False
    #: Decay of an exponential moving average of the weights (0: off). With it, validation, ``best.pt`` and so the
    #: export use the averaged weights: small noisy batches (CPU) move the raw weights around a minimum by more
    #: than the late lr decay can settle. 0.999 averages over ~1,000 steps.
    ema: float = 0.0
    #: Training stand-in for rounding: "noise" (every reference's proxy) or, where the architecture implements it
    #: (``training_quantizers``), "mixed": noise for the rate, straight-through rounding for what the synthesis
    #: and the context see (``entropy.causal_context.CausalContextCoding``).
    quantizer: str = "noise"
    #: What validation scores, and so what picks ``best.pt``: "decoded" codes each validation image for real (the
    #: shipped CPU float64 coding loop, real rANS bytes, g_s on the ŷ a decoder reconstructs); "estimate" is the
    #: eval-mode forward (likelihood bits, g_s on round(y)), which read 0.4 dB (tic-small q3) to 1.1 dB (a
    #: GPU-trained erstc-small q3) above the decoded PSNR on the validation set: too optimistic to choose by.
    val_metric: str = "decoded"
    threads: int = 0  # torch intra-op threads on CPU (0: leave the default)
    workers: int = 1
    eval_every: int = 500
    ckpt_every: int = 100
    max_val_images: int = 12
    #: Stop this call after so many minutes of training (0: no limit), validating and checkpointing first, and
    #: count elapsed time as progress for the late lr decay: a time-boxed run (a lent GPU has ~15 minutes in
    #: all) still ends decayed. Time counts per call; a resumed run starts its clock again.
    max_minutes: float = 0.0
    #: What ``max_minutes`` counts: "wall" time, or "cpu" time of this process (``time.process_time``). A niced
    #: run beside foreground work gets a varying share of a core; side-by-side experiments ("same CPU minutes")
    #: need the CPU clock so both runs stop and decay after the same compute.
    budget_clock: str = "wall"
    #: Variable-rate training only: each crop's RD loss is weighted by ``(λ_ref / λ)^rate_balance``
    #: (:meth:`RateKnob.balance_weights`; 0: unweighted). Why: the loss grows ~λ^0.64 over erstc-small's knob
    #: (0.25 at code 1, 8.1 at code 255 on the validation photos), so an unweighted mean is decided by the
    #: high-rate crops and the low end barely trains; with the exponent near that slope every rate point moves the
    #: weights about as much as its *relative* loss changes, which is what the geometric-mean validation scores.
    rate_balance: float = 0.0
    #: Run the training forward through ``torch.compile`` (inductor; on a CPU it needs a C++ compiler). Why: on
    #: this 2-core CPU it fuses the Swin blocks' many small element-wise ops: erstc-small-vr at 8x128², one
    #: thread, 1.16 -> 0.78 CPU s/step (1.48x the steps per CPU-hour) after a one-off compile of ~2 CPU-minutes
    #: per process. Same maths (gradients equal to float rounding); validation and export use the eager model.
    compile: bool = False
    #: Variable-rate training only: condition g_s on the knob (``LearnedImageCodec.add_synthesis_modulation``, a
    #: per-channel scale and shift after each upsampling stage, identity at the start). A file that has one
    #: cannot be continued without it (refused, never dropped).
    synthesis_modulation: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


#: ``torch.compile`` backend of ``--compile`` (the tests swap in "aot_eager": the same tracing and guards without
#: inductor's minutes of C++ compilation).
COMPILE_BACKEND = "inductor"

#: Consecutive steps with a non-finite gradient after which training stops instead of skipping them.
MAX_BAD_STEPS = 20


def progress(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """How far the run is, 0..1: the larger of the step fraction and (with ``max_minutes``) the fraction of the
    time budget used, so a time-boxed run reaches its late phase in time."""
    done = step / cfg.steps
    if cfg.max_minutes > 0:
        done = max(done, elapsed_s / (60.0 * cfg.max_minutes))
    return done


def decayed(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> bool:
    """Whether the run is in its late phase (``progress`` has reached ``decay_at``)."""
    return progress(step, cfg, elapsed_s) >= cfg.decay_at


def distilling(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> bool:
    """Whether the distillation term applies: before ``distill_until`` (default: the late decay)."""
    until = cfg.decay_at if cfg.distill_until is None else cfg.distill_until
    return progress(step, cfg, elapsed_s) < until


def lr_at(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then constant, then one late step decay (the recipe that worked best here)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * (cfg.decay_factor if decayed(step, cfg, elapsed_s) else 1.0)


def load_teacher(spec: str, cfg: TrainConfig, student: LearnedImageCodec, device) -> LearnedImageCodec:
    """The frozen teacher of ``TrainConfig.teacher`` (``ARCH=WEIGHTS``), checked to produce the student's latent
    shape before any training step is spent."""
    arch, sep, path = spec.partition("=")
    if not sep or not path:
        raise ValueError(f"--teacher takes ARCH=WEIGHTS (e.g. wacnn=model_store/weights/...), got {spec!r}")
    teacher = create_model(arch, cfg.preset, cfg.quality)
    unloaded = load_weights_only(teacher, path)
    if unloaded:  # a partly random teacher would teach noise
        raise ValueError(f"{path} is not a complete {arch}-{cfg.preset} model: {len(unloaded)} parameters missing")
    teacher = teacher.to(device).eval().requires_grad_(False)
    probe = torch.zeros(1, 3, 64, 64, device=device)
    training = student.training
    with torch.no_grad():  # in eval mode: a train-mode probe would draw from the (resumed) RNG streams
        theirs, ours = teacher.analysis(probe).shape, student.eval().analysis(probe).shape
    student.train(training)
    if theirs != ours:
        raise ValueError(
            f"teacher {arch}-{cfg.preset}'s latent {tuple(theirs)} differs from {cfg.arch}-{cfg.preset}'s "
            f"{tuple(ours)} for a 64x64 input: distillation needs the same channels and stride"
        )
    return teacher


def amp_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is native on ``device`` (CPUs without AVX512-BF16/AMX emulate it, slowly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (
        device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def rd_loss(
    out: Dict, x: torch.Tensor, lmbda: Union[float, torch.Tensor], weights: Optional[torch.Tensor] = None
) -> Dict[str, torch.Tensor]:
    """``λ·255²·MSE + bpp`` of a batch; ``lmbda`` a float, or one λ per image ``(B,)`` (variable-rate training:
    each image's loss at its own λ, then the mean, weighted per image by ``weights`` if given)."""
    n, _, h, w = x.shape
    if not isinstance(lmbda, torch.Tensor):
        bpp = total_bpp(out["likelihoods"], n * h * w)
        mse = F.mse_loss(out["x_hat"].float().clamp(0, 1), x)
        return {"loss": lmbda * 255.0**2 * mse + bpp, "bpp": bpp, "mse": mse}
    bits = sum(torch.log2(p).flatten(1).sum(1) for p in out["likelihoods"].values())
    bpp_each = bits / (-h * w)
    mse_each = F.mse_loss(out["x_hat"].float().clamp(0, 1), x, reduction="none").flatten(1).mean(1)
    each = lmbda.to(mse_each) * 255.0**2 * mse_each + bpp_each
    loss = (each * weights.to(each)).mean() if weights is not None else each.mean()
    return {"loss": loss, "bpp": bpp_each.mean(), "mse": mse_each.mean()}


def psnr_from_mse(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def split_parameters(model: LearnedImageCodec):
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


VAL_METRICS = ("decoded", "estimate")


@torch.no_grad()
def validate(
    model: LearnedImageCodec,
    images: List[torch.Tensor],
    lmbda: float,
    device,
    metric: str = "decoded",
    knob: Optional[int] = None,
) -> Dict[str, float]:
    """Mean RD loss, bpp and PSNR on the validation images, measured as ``metric`` says (``TrainConfig.val_metric``).

    "decoded" is what a user gets: bytes of the real payloads (the container header aside) and the PSNR of g_s on
    the decoder's ŷ, from this model's own fresh CDF tables. "estimate" is the eval-mode forward. ``knob``: the code
    a variable-rate model is scored at (``lmbda`` should be that code's λ).
    """
    if metric not in VAL_METRICS:
        raise ValueError(f"validation metric must be one of {VAL_METRICS}, got {metric!r}")
    model.eval()
    canon = None
    if metric == "decoded":
        canon = canonical_copy(model)
        canon.update(force=True)
    totals = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}
    for img in images:
        x = img.unsqueeze(0).to(device)
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, model.pad_multiple)
        if canon is None:
            position = None if knob is None else torch.tensor([model.rate_knob.position(knob)], device=device)
            out = model(padded, knob=position)
            x_hat = out["x_hat"]
            # rate of the padded latent over the true pixel count, as the real codec's bpp would be
            bpp = total_bpp(out["likelihoods"], h * w).item()
        else:
            y = model.analysis(padded)
            try:
                payload, y_hat = canon.compress_latent_and_reconstruct(y.cpu(), knob=knob)
            except UncodableLatentError:  # a diverged model: worse than anything that can be coded
                model.train()
                return {"loss": math.inf, "bpp": math.inf, "psnr": 0.0}
            x_hat = model.synthesis(y_hat.to(device=device, dtype=y.dtype), knob)
            bpp = 8.0 * (len(payload.z_string) + len(payload.y_string)) / (h * w)
        mse = F.mse_loss(x_hat[..., :h, :w].float().clamp(0, 1), x).item()
        totals["bpp"] += bpp
        totals["psnr"] += psnr_from_mse(mse)
        totals["loss"] += lmbda * 255.0**2 * mse + bpp
    model.train()
    return {k: v / max(len(images), 1) for k, v in totals.items()}


def validate_rate_knob(
    model: LearnedImageCodec,
    images: List[torch.Tensor],
    device,
    metric: str = "decoded",
    served_code_span: Optional[Tuple[float, float]] = None,
) -> Dict:
    """A variable-rate model scored at each of its knob's ``validation_codes`` (at that code's λ).

    ``loss`` is the geometric mean of the per-code losses: a change of x % at any rate counts the same, as in a
    BD-rate, where an arithmetic mean would let the high-rate codes (losses ~10x the low-rate ones) decide alone.
    ``bpp`` and ``psnr`` are means over the codes; ``levels`` keeps each code's numbers. Where
    ``served_code_span`` (the preset's :attr:`~Preset.served_knob`) spreads the codes differently, ``served_bottom``
    also scores code 1 of that span, the lowest rate a release will serve; it stays out of ``loss``, so runs remain
    comparable with every run before it.
    """
    knob = model.rate_knob
    levels = {
        str(code): validate(model, images, knob.code_lambda(code), device, metric, knob=code)
        for code in knob.validation_codes
    }
    losses = [v["loss"] for v in levels.values()]
    loss = math.inf if any(not math.isfinite(v) for v in losses) else math.exp(sum(map(math.log, losses)) / len(losses))
    mean = {k: sum(v[k] for v in levels.values()) / len(levels) for k in ("bpp", "psnr")}
    out = {"loss": loss, **mean, "levels": levels}
    if served_code_span is not None and tuple(served_code_span) != knob.code_span:
        model.use_code_span(served_code_span)
        try:
            out["served_bottom"] = validate(model, images, model.rate_knob.code_lambda(1), device, metric, knob=1)
        finally:
            model.use_code_span(knob.code_span)
    return out


class WeightAverage:
    """Exponential moving average of a model's parameters (buffers copied), as a model to validate and save.

    The decay ramps up as ``(1 + t) / (10 + t)`` so early steps, far from any minimum, are not averaged in for long.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> Dict[str, object]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def save_checkpoint(
    path: Path, model, opt, aux_opt, step: int, cfg: TrainConfig, best: float, ema: Optional[WeightAverage] = None
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "opt": opt.state_dict(),
            "aux_opt": aux_opt.state_dict(),
            "step": step,
            "config": dataclasses.asdict(cfg),
            "best_val": best,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written checkpoint


def load_weights_only(model: LearnedImageCodec, path: str, widen: Optional[str] = None) -> Set[str]:
    """Start from another run's weights: a training checkpoint (``.pt``) or shipped fp16 weights (``.safetensors``).

    Shipped weights are a valid base because a fresh machine has no ``runs/``: fine-tuning a new quality from the
    installed release is the cheapest start there is. Optimiser state is never carried over (new λ, new run).

    The checkpoint may come from a sibling architecture: what the two share by name and shape is loaded, what the
    model has in addition starts as identity where it can (deeper Swin stages: ``start_new_blocks_as_identity``)
    or as initialised, and parameters whose shapes differ are left as initialised; both are reported. E.g.
    ``stf-small`` from ``wacnn-small``: the same hyperprior and channel-conditional entropy model (77 % of its
    parameters), only the Swin transforms g_a/g_s to learn. Returns the names of the parameters it did not load.

    With ``widen`` (``OLD:NEW`` channel groups, :mod:`model_store.widen`) a checkpoint of a *narrower* preset is
    embedded instead: tensors of other shapes keep their trained values in the wider ones, new outputs start at 0.
    """
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        from model_store.registry import float_state

        state = float_state(load_file(str(path)))
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    from model_store.registry import lacks_stored_modulation, with_model_constants

    if lacks_stored_modulation(model, state):
        # the optimiser is built before this load: adding the module here would leave it untrained
        raise ValueError(f"{path} conditions g_s on the knob: train it with --synthesis-modulation")
    if widen:
        from model_store.widen import WidenUnit, widen_state, widened_names

        grown = widened_names(model, state)
        state = widen_state(model, state, WidenUnit.parse(widen))
        print(f"{len(grown)} tensors of {path} widened into this preset ({widen})", file=sys.stderr)
    own = dict(model.named_parameters())
    reshaped = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    state = {k: v for k, v in state.items() if k not in reshaped}
    missing = set(model.load_state_dict(with_model_constants(model, state), strict=False).missing_keys)
    if reshaped:
        modules = sorted({k.split(".")[0] for k in reshaped})
        print(
            f"{len(reshaped)} parameters of other shapes in {path} left as initialised ({', '.join(modules)})",
            file=sys.stderr,
        )
    new_params = [k for k in own if k in missing]
    if new_params:
        modules = sorted({k.split(".")[0] for k in new_params})
        print(f"{len(new_params)} parameters absent from {path} ({', '.join(modules)})", file=sys.stderr)
    grown = start_new_blocks_as_identity(model, missing)
    if grown:
        print(f"{len(grown)} blocks absent from {path} start as identity: {', '.join(grown)}", file=sys.stderr)
    return set(new_params) | set(reshaped)


def start_new_blocks_as_identity(model: nn.Module, missing_keys: Set[str]) -> List[str]:
    """Make every block that the init checkpoint had no weights for (all of its parameters missing), in a stage it
    did have blocks of, an identity when the block knows how (``start_as_identity``); returns their names.

    This is what lets a deeper sibling start from a trained shallower model (``tic_plus-small`` from
    ``tic-small``: same widths, more Swin blocks per stage) at exactly the shallower model's rate-distortion, and
    fine-tune from there instead of from a wrecked start. A checkpoint of the same architecture misses nothing,
    so this changes nothing for it.
    """
    loaded = [k for k, _ in model.named_parameters() if k not in missing_keys]
    grown = []
    for name, module in model.named_modules():
        params = [f"{name}.{p}" for p, _ in module.named_parameters()]
        stage = name.rpartition(".")[0] + "."  # the block list it belongs to
        if (
            hasattr(module, "start_as_identity")
            and params
            and all(p in missing_keys for p in params)
            and any(k.startswith(stage) for k in loaded)  # the stage is deeper, not new: new stages learn from init
        ):
            module.start_as_identity()
            grown.append(name)
    return grown


def build_data(cfg: TrainConfig):
    from model_store.training_data import ImageFolderDataset, RandomCropDataset

    train = RandomCropDataset(
        cfg.train_dir, crop=cfg.crop, scales=tuple(cfg.scale_range), length=cfg.steps * cfg.batch_size, seed=cfg.seed
    )
    val = ImageFolderDataset(cfg.val_dir)
    val_images = [val[i] for i in range(min(len(val), cfg.max_val_images))]
    return train, val_images


def train(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # Training only (codec inference never runs in this process): TF32 matmuls and convolutions are ~8x
        # float32 on Hopper, and the fixed crop size lets cuDNN pick its fastest kernels once.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    knob = get_preset(cfg.arch, cfg.preset).rate_knob
    served_knob = get_preset(cfg.arch, cfg.preset).served_knob  # what its exports will serve
    if knob is not None and cfg.lmbda is not None:
        raise ValueError(f"{cfg.arch}-{cfg.preset} is variable-rate: it draws λ per crop, --lmbda does not apply")
    lmbda = cfg.lmbda if cfg.lmbda is not None else float(get_preset(cfg.arch, cfg.preset).lambdas[cfg.quality])

    amp = cfg.amp and amp_supported(device)
    if cfg.amp and not amp:
        print(
            f"--amp ignored: {device} has no native bf16 (it would be emulated, slower than float32)", file=sys.stderr
        )
    model = create_model(cfg.arch, cfg.preset, cfg.quality)
    if cfg.synthesis_modulation:
        model.add_synthesis_modulation()
    model = model.to(device)
    if cfg.quantizer not in model.training_quantizers:
        raise ValueError(
            f"--quantizer {cfg.quantizer}: {cfg.arch} trains with {', '.join(model.training_quantizers)} only"
        )
    model.training_quantizer = cfg.quantizer
    if cfg.crop < model.min_train_crop:
        print(
            f"warning: --crop {cfg.crop} is below {cfg.arch}-{cfg.preset}'s minimum training crop "
            f"{model.min_train_crop}: its entropy model will not see the latent as it does on a photo",
            file=sys.stderr,
        )
    if cfg.val_metric not in VAL_METRICS:
        raise ValueError(f"--val-metric must be one of {VAL_METRICS}, got {cfg.val_metric!r}")
    if cfg.distill_until is not None and not (cfg.teacher and 0.0 <= cfg.distill_until <= 1.0):
        raise ValueError(
            f"--distill-until takes a fraction 0..1 of the run and needs --teacher, got {cfg.distill_until}"
        )
    main_params, aux_params = split_parameters(model)
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    start, best, resumed_metric = 0, math.inf, cfg.val_metric
    last = out / "last.pt"
    if last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        aux_opt.load_state_dict(ckpt["aux_opt"])
        start, best = ckpt["step"], ckpt.get("best_val", math.inf)
        resumed_metric = ckpt.get("config", {}).get("val_metric", "estimate")  # runs before val_metric: estimate
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        np.random.set_state(ckpt["rng"]["numpy"])
        print(f"resumed {last} at step {start}", file=sys.stderr)
    elif cfg.init_from:
        load_weights_only(model, cfg.init_from, widen=cfg.widen_unit)
        print(f"initialised from {cfg.init_from}", file=sys.stderr)
    teacher = load_teacher(cfg.teacher, cfg, model, device) if cfg.teacher else None
    ema = WeightAverage(model, cfg.ema) if cfg.ema > 0 else None
    if ema is not None and last.exists() and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    train_set, val_images = build_data(cfg)

    def score(m: LearnedImageCodec) -> Dict:
        """Validation as the run chooses by: one λ, or a variable-rate model's codes (``validate_rate_knob``)."""
        if knob is not None:
            return validate_rate_knob(m, val_images, device, cfg.val_metric, served_knob.code_span)
        return validate(m, val_images, lmbda, device, cfg.val_metric)

    if resumed_metric != cfg.val_metric and (out / "best.pt").exists():
        best = rescore_best(out / "best.pt", model, score)
        print(f"re-scored best.pt with the {cfg.val_metric} metric (was {resumed_metric}): {best:.4f}", file=sys.stderr)
    sampler = range(start * cfg.batch_size, cfg.steps * cfg.batch_size)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(train_set, list(sampler)),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
    )
    log = open(out / "log.jsonl", "a")
    scored = ema.model if ema is not None else model  # what is validated and saved as best.pt

    def keep_if_best(step: int, val: Dict[str, float]) -> None:
        nonlocal best
        if val["loss"] < best:
            best = val["loss"]
            torch.save({"model": scored.state_dict(), "step": step, "val": val}, out / "best.pt")

    if start == 0:  # the starting point's score: a run that never beats its init keeps the init as best.pt
        record = {"step": 0, "val": score(model)}
        keep_if_best(0, record["val"])
        log.write(json.dumps(record) + "\n")
    model.train()
    if cfg.budget_clock not in ("wall", "cpu"):
        raise ValueError(f"--budget-clock is wall or cpu, got {cfg.budget_clock!r}")
    clock = time.process_time if cfg.budget_clock == "cpu" else time.time
    t0, wall0, cpu0 = clock(), time.time(), time.process_time()
    bar = tqdm(loader, initial=start, total=cfg.steps, desc=f"{cfg.arch}-{cfg.preset} q{cfg.quality}", smoothing=0.05)
    step, bad_steps = start, 0
    # the compiled forward shares model's parameters: one set of weights, validated and saved through model
    forward = torch.compile(model, backend=COMPILE_BACKEND) if cfg.compile else model
    for x in bar:
        x = x.to(device, non_blocking=True)
        lr = lr_at(step, cfg, clock() - t0)
        for group in opt.param_groups:
            group["lr"] = lr
        # a variable-rate model trains each crop at its own knob position (λ), drawn over the knob's training range
        positions = None if knob is None else knob.sample_positions(x.shape[0]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out_fw = forward(x, knob=positions)
        if positions is None:
            losses = rd_loss(out_fw, x, lmbda)
        else:
            crop_lambdas = knob.lambda_at(positions)
            weights = knob.balance_weights(crop_lambdas, cfg.rate_balance) if cfg.rate_balance else None
            losses = rd_loss(out_fw, x, crop_lambdas, weights)
        if teacher is not None and distilling(step, cfg, clock() - t0):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                y_teacher = teacher.analysis(x)
            losses["distill"] = F.mse_loss(out_fw["y"].float(), y_teacher.float())
            losses["loss"] = losses["loss"] + cfg.distill_weight * losses["distill"]
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(main_params, cfg.clip_norm)
        if torch.isfinite(grad_norm):  # a non-finite loss gives a non-finite norm too
            opt.step()
            bad_steps = 0
        else:  # one overflow (a bf16 outlier, a degenerate crop) must not poison Adam's moments: skip it
            bad_steps += 1
            if bad_steps >= MAX_BAD_STEPS:
                raise FloatingPointError(f"{bad_steps} steps in a row had a non-finite gradient (step {step})")
        aux = model.aux_loss()
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        record = {
            "step": step,
            "loss": losses["loss"].item(),
            "bpp": losses["bpp"].item(),
            "psnr": psnr_from_mse(losses["mse"].item()),
            "aux": aux.item(),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "skipped": bad_steps > 0,
            "elapsed_s": round(time.time() - wall0, 1),
            "cpu_s": round(time.process_time() - cpu0, 1),
        }
        if "distill" in losses:
            record["distill"] = losses["distill"].item()
        bar.set_postfix(loss=f"{record['loss']:.3f}", bpp=f"{record['bpp']:.3f}", psnr=f"{record['psnr']:.2f}")
        out_of_time = cfg.max_minutes > 0 and clock() - t0 >= 60.0 * cfg.max_minutes
        final = step == cfg.steps or out_of_time
        if step % cfg.eval_every == 0 or final:
            record["val"] = score(scored)
            keep_if_best(step, record["val"])
            bar.write(f"step {step}: val {record['val']}")
        log.write(json.dumps(record) + "\n")
        log.flush()
        if step % cfg.ckpt_every == 0 or final:
            save_checkpoint(last, model, opt, aux_opt, step, cfg, best, ema)
        if out_of_time:
            bar.write(f"stopping at step {step}: the {cfg.max_minutes} min budget is used (resume to continue)")
            break
    log.close()
    return last


def rescore_best(path: Path, model: LearnedImageCodec, score: Callable[[LearnedImageCodec], Dict]) -> float:
    """Score a run's best.pt again with the run's validation ``score`` (resuming a run that validated another way)
    and record it, so later steps are compared like for like: the estimate reads higher than decoded, never
    comparable."""
    ckpt = torch.load(path, map_location=next(model.parameters()).device, weights_only=False)
    scorer = copy.deepcopy(model)
    scorer.load_state_dict(ckpt["model"])
    ckpt["val"] = score(scorer)
    torch.save(ckpt, path)
    return ckpt["val"]["loss"]


def environment() -> Dict[str, str]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor(), "gpu": gpu}


#: ``QUALITY=@v1`` on the export command line: keep that quality's file from installed version v1 unchanged.
REUSE_PREFIX = "@"


def _ladder_lambdas(arch: str, preset: str) -> List[float]:
    """The per-λ sibling preset's λ (``small-vr`` -> ``small``), where there is one: the points a variable-rate
    release is measured at."""
    try:
        return sorted(get_preset(arch, preset.removesuffix("-vr")).lambdas.values())
    except UnknownModelError:
        return []


def export(arch: str, preset: str, version: str, runs: Dict[int, str], root: Optional[str] = None) -> Path:
    """Package trained checkpoints as shipped fp16 weights with a manifest.

    ``runs`` maps quality to a checkpoint path, or to ``@<version>`` to carry an installed version's file over
    unchanged (the new manifest points at it; see ``registry.weights_path``).
    """
    from model_store import registry

    served = get_preset(arch, preset).served_knob
    if served is not None:  # a release lists the codes it measures; the default must be one (GET /v1/models shows it)
        if served.default_code not in runs:
            raise ValueError(
                f"list the default code {served.default_code} of {arch}-{preset} (what a request without a quality "
                f"gets at the exported code span {served.code_span}); its λ-nearest codes: "
                + ", ".join(f"λ {lam:g} -> {served.nearest_code(lam)}" for lam in _ladder_lambdas(arch, preset))
            )
    reused = {q: v[len(REUSE_PREFIX) :] for q, v in runs.items() if v.startswith(REUSE_PREFIX)}
    models, recipe = {}, {"runs": {}, "environment": environment()}
    for quality, old_version in sorted(reused.items()):
        recipe["runs"][str(quality)] = {"reused_from": old_version}
    for quality, ckpt_path in sorted((q, v) for q, v in runs.items() if q not in reused):
        path = Path(ckpt_path)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        model = registry.with_optional_modules(create_model(arch, preset, quality), ckpt["model"])
        model.load_state_dict(registry.with_model_constants(model, ckpt["model"]))  # a transferred ckpt is fp16
        models[quality] = model.eval()
        cfg_path = path.parent / "config.json"
        config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        recipe["runs"][str(quality)] = {
            "checkpoint_step": ckpt.get("step"),
            "config": config,
            # runs from before TrainConfig.val_metric validated with the estimate
            "validation": {
                "metric": config.get("val_metric", "estimate"),
                **(ckpt.get("val") or {"best_loss": ckpt.get("best_val")}),
            },
        }
    return registry.write_model_version(
        models, arch, preset, version, root=Path(root) if root else registry.WEIGHTS_ROOT, recipe=recipe, reused=reused
    )


def parse_args(argv: Optional[List[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        p = argparse.ArgumentParser(prog="python -m model_store.train export")
        p.add_argument("--arch", required=True)
        p.add_argument("--preset", required=True)
        p.add_argument("--version", required=True)
        p.add_argument("--root", default=None)
        p.add_argument("runs", nargs="+", help="QUALITY=CHECKPOINT, or QUALITY=@VERSION to keep an installed file")
        args = p.parse_args(argv[1:])
        runs = {int(k): v for k, v in (item.split("=", 1) for item in args.runs)}
        return "export", args, runs
    p = argparse.ArgumentParser(prog="python -m model_store.train")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            p.add_argument(flag, type=float, nargs="+", default=default)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            if f.name in ("lmbda", "distill_until"):
                kind = float
            p.add_argument(flag, type=kind, default=default)
    return "train", TrainConfig(**vars(p.parse_args(argv))), None


def main(argv: Optional[List[str]] = None) -> None:
    mode, args, runs = parse_args(argv)
    if mode == "export":
        print(export(args.arch, args.preset, args.version, runs, args.root))
    else:
        print(train(args))


if __name__ == "__main__":
    main()
