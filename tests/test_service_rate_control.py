"""A variable-rate model over HTTP (issue #27): any quality code, and max_bytes / target_bpp / min_psnr targets.

The server serves a tiny random variable-rate ERSTC (16 codes) exported the way shipped weights are, next to the
per-λ test model; every stream it returns must be the one the library makes for the same request, byte for byte.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re

import httpx
import numpy as np
import pytest

pytest.register_assert_rewrite("service_fixtures")

from conftest import natural_image  # noqa: E402
from service_fixtures import MODEL, QUALITIES, VR, running  # noqa: E402
from test_service_api import assert_error as error_body  # noqa: E402
from test_service_metrics import scrape, value  # noqa: E402

from model_store import container, metrics, registry  # noqa: E402
from model_store.architectures.erstc import ERSTC_TINY_KNOB  # noqa: E402
from model_store.codec import ImageCodec  # noqa: E402
from model_store.image_io import encode_image, open_image  # noqa: E402
from model_store.rate_control import RateTarget, compress_to_target  # noqa: E402
from service.client import AsyncLicClient, LicClient, ServiceClientError  # noqa: E402
from service.media import BITSTREAM  # noqa: E402

pytest_plugins = ("service_fixtures",)

LEVELS = ERSTC_TINY_KNOB.levels
IMAGES = [natural_image(64, 96, seed) for seed in range(2)]


def _png(image: np.ndarray) -> bytes:
    return encode_image(image, "PNG")


@pytest.fixture(scope="module")
def vr_server(vr_root):
    models = {VR: [], MODEL: list(QUALITIES)}
    with running(vr_root, models=models, max_batch_delay_ms=150) as server:
        yield server


@pytest.fixture()
def http(vr_server):
    with httpx.Client(base_url=vr_server.url, timeout=60) as c:
        yield c


@functools.lru_cache(maxsize=None)
def local(root) -> ImageCodec:
    """The library's codec of the same weights, to compare streams byte for byte."""
    registry.refresh()
    return ImageCodec.from_entry(registry.resolve(VR, ERSTC_TINY_KNOB.default_code, root=root))


def post(http, image: np.ndarray, **params) -> httpx.Response:
    return http.post(
        "/compress", params={"model": VR, **params}, content=_png(image), headers={"Content-Type": "image/png"}
    )


def assert_error(r: httpx.Response, status: int, code: str) -> str:
    return error_body(r, status, code)["error"]


# -- the knob ---------------------------------------------------------------------------------------------------------
def test_the_model_list_describes_the_knob_and_the_measured_codes(http):
    info = next(m for m in http.get("/v1/models").json()["models"] if m["model"] == VR)
    assert info["variable_rate"]["levels"] == LEVELS
    assert info["default_quality"] == ERSTC_TINY_KNOB.default_code
    assert [q["quality"] for q in info["qualities"]] == [1, LEVELS]
    assert info["qualities"][0]["validation"]["bpp"] == 0.2
    assert len({q["weights_sha256"] for q in info["qualities"]}) == 1  # one file for every code
    per_lambda = next(m for m in http.get("/v1/models").json()["models"] if m["model"] == MODEL)
    assert per_lambda["variable_rate"] is None


@pytest.mark.parametrize("code", [1, 5, LEVELS])
def test_any_code_is_served_by_one_instance_and_streams_match_the_library(http, vr_root, code):
    r = post(http, IMAGES[0], quality=code)
    assert r.status_code == 200, r.text
    assert int(r.headers["X-Quality"]) == code == container.parse_header(r.content).quality
    assert r.content == local(vr_root).compress(IMAGES[0], quality=code)
    back = http.post("/decompress", content=r.content, headers={"Content-Type": BITSTREAM})
    assert back.status_code == 200 and back.headers["X-Quality"] == str(code)
    assert np.array_equal(open_image(back.content), local(vr_root).decompress(r.content))


def test_no_quality_means_the_knobs_default_code_and_more_code_means_more_bytes(http):
    r = post(http, IMAGES[1])
    assert int(r.headers["X-Quality"]) == ERSTC_TINY_KNOB.default_code
    sizes = [len(post(http, IMAGES[1], quality=q).content) for q in (1, ERSTC_TINY_KNOB.default_code, LEVELS)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize("quality", [LEVELS + 1, 255])
def test_a_code_off_the_scale_is_a_400_naming_the_range(http, quality):
    error = assert_error(post(http, IMAGES[0], quality=quality), 400, "bad_parameter")
    assert f"1..{LEVELS}" in error


def test_requests_at_different_codes_share_one_network_pass(vr_server, vr_root):
    async def burst():
        async with AsyncLicClient(vr_server.url, timeout=60) as client:
            return await asyncio.gather(
                *(client.compress(_png(IMAGES[0]), model=VR, quality=q) for q in (2, 7, 11, 16))
            )

    results = asyncio.run(burst())
    assert max(r.batch_size for r in results) > 1
    for result, code in zip(results, (2, 7, 11, 16)):
        assert result.quality == code and result.stream == local(vr_root).compress(IMAGES[0], quality=code)


# -- rate targets -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_index", range(len(IMAGES)))
def test_max_bytes_is_never_exceeded_and_the_stream_is_the_librarys(http, vr_root, image_index):
    image = IMAGES[image_index]
    smallest = len(local(vr_root).compress(image, quality=1))
    largest = len(local(vr_root).compress(image, quality=LEVELS))
    for cap in np.linspace(smallest, largest * 1.2, 5).astype(int):
        r = post(http, image, max_bytes=int(cap))
        assert r.status_code == 200, r.text
        assert len(r.content) <= cap and int(r.headers["X-Compressed-Bytes"]) == len(r.content)
        expected = compress_to_target(local(vr_root), image, RateTarget(max_bytes=int(cap)))
        assert r.content == expected.stream and int(r.headers["X-Quality"]) == expected.quality
        assert r.headers["X-Rate-Control"] == f"max_bytes={cap}; probes={expected.probes}; encodes={expected.encodes}"


def test_a_cap_above_the_top_gets_the_top_stream_and_one_below_the_smallest_is_a_422(http, vr_root):
    image = IMAGES[0]
    top = local(vr_root).compress(image, quality=LEVELS)
    r = post(http, image, max_bytes=10 * len(top))
    assert r.status_code == 200 and r.content == top and r.headers["X-Quality"] == str(LEVELS)
    smallest = len(local(vr_root).compress(image, quality=1))
    error = assert_error(post(http, image, max_bytes=smallest - 1), 422, "target_unreachable")
    assert str(smallest) in error  # the reachable limit


def test_target_bpp_and_min_psnr_match_the_library_and_report_what_they_achieved(http, vr_root):
    image = IMAGES[1]
    r = post(http, image, target_bpp=0.8)
    expected = compress_to_target(local(vr_root), image, RateTarget(target_bpp=0.8))
    assert r.status_code == 200 and r.content == expected.stream
    assert float(r.headers["X-Bits-Per-Pixel"]) == pytest.approx(expected.bpp, abs=1e-6)
    assert "X-PSNR" not in r.headers
    ends = [metrics.psnr(local(vr_root).decompress(local(vr_root).compress(image, quality=q)), image) for q in (1, 16)]
    goal = round(sum(ends) / 2, 2)  # a random model's PSNRs are low: aim between its ends
    r = post(http, image, min_psnr=goal)
    expected = compress_to_target(local(vr_root), image, RateTarget(min_psnr=goal))
    assert r.status_code == 200 and r.content == expected.stream
    assert float(r.headers["X-PSNR"]) == pytest.approx(expected.psnr, abs=1e-3) and expected.psnr >= goal
    error = assert_error(post(http, image, min_psnr=max(ends) + 5), 422, "target_unreachable")
    assert re.search(r"\d+\.\d+ dB", error)  # the best PSNR this model reaches on the image


@pytest.mark.parametrize(
    "params",
    [
        {"max_bytes": 1000, "target_bpp": 0.5},
        {"quality": 3, "min_psnr": 30},
        {"target_bpp": 0.5, "effort": 1},
        {"target_bpp": "inf"},
        {"min_psnr": "nan"},
        {"max_bytes": 0},
    ],
)
def test_a_malformed_or_conflicting_target_is_a_400_before_any_decoding(http, params):
    assert_error(post(http, IMAGES[0], **params), 400, "bad_parameter")


def test_a_per_lambda_model_refuses_a_target_with_422(http):
    r = http.post(
        "/compress",
        params={"model": MODEL, "max_bytes": 5000},
        content=_png(IMAGES[0]),
        headers={"Content-Type": "image/png"},
    )
    assert "variable-rate" in assert_error(r, 422, "rate_control_unsupported")


def test_prometheus_counts_probes_per_request_and_labels_the_instance_knob(vr_server, http):
    before = scrape(vr_server.url)
    r = post(http, IMAGES[0], target_bpp=0.5)
    probes = int(re.search(r"probes=(\d+)", r.headers["X-Rate-Control"]).group(1))
    after = scrape(vr_server.url)

    def added(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("lic_rate_control_probes_count", model=VR, target="target_bpp") == 1
    assert added("lic_rate_control_probes_sum", model=VR, target="target_bpp") == probes
    assert added("lic_rate_control_encodes_count", model=VR, target="target_bpp") == 1
    assert added("lic_stage_duration_seconds_count", op="compress", model=VR, stage="rate_control") == 1
    qualities = {dict(ls)["quality"] for (n, ls) in after if n == "lic_http_requests_total" and ("model", VR) in ls}
    assert qualities == {"knob"}  # one series for the model, not one per code


def test_the_client_and_the_command_line_ask_for_a_byte_budget(vr_server, vr_root, tmp_path, capsys):
    from service.__main__ import main

    with LicClient(vr_server.url, timeout=60) as client:
        result = client.compress(_png(IMAGES[0]), model=VR, max_bytes=400)
        assert result.compressed_bytes <= 400 and result.rate_control.startswith("max_bytes=400;")
        with pytest.raises(ServiceClientError) as refused:
            client.compress(_png(IMAGES[0]), model=VR, max_bytes=5)
        assert refused.value.code == "target_unreachable"
    source, out = tmp_path / "in.png", tmp_path / "out.lic"
    source.write_bytes(_png(IMAGES[0]))
    assert main(["compress", str(source), str(out), "--model", VR, "--max-bytes", "400", "--url", vr_server.url]) == 0
    assert out.read_bytes() == result.stream and "max_bytes=400" in capsys.readouterr().out


def test_a_target_cannot_be_combined_with_a_quality_on_the_command_line(capsys):
    from service.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["compress", "a.png", "b.lic", "--quality", "3", "--max-bytes", "100"])
    assert "not allowed with" in capsys.readouterr().err


def test_the_openapi_document_names_the_targets_and_their_errors(http):
    spec = http.get("/openapi.json").json()
    op = spec["paths"]["/compress"]["post"]
    assert {"max_bytes", "target_bpp", "min_psnr"} <= {p["name"] for p in op["parameters"]}
    described = json.dumps(op["responses"]["422"])
    assert "target_unreachable" in described and "rate_control_unsupported" in described
    assert {"X-Rate-Control", "X-PSNR"} <= set(op["responses"]["200"]["headers"])
