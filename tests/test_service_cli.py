"""The contract (OpenAPI), the Python clients and the command line, against a real server."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import subprocess

import numpy as np
import pytest

pytest.register_assert_rewrite("service_fixtures")

from conftest import natural_image  # noqa: E402
from service_fixtures import MODEL, local_codec, png  # noqa: E402

from model_store import container, registry  # noqa: E402
from model_store.image_io import encode_image, open_image  # noqa: E402
from model_store.refine import MAX_EFFORT  # noqa: E402
from service.__main__ import OPENAPI_PATH, main, openapi_document, parse_args  # noqa: E402
from service.client import AsyncLicClient, ServiceClientError, parse_server_timing  # noqa: E402
from service.server import uvicorn_config  # noqa: E402
from service.settings import load_settings  # noqa: E402

pytest_plugins = ("service_fixtures",)


# -- OpenAPI -----------------------------------------------------------------------------------------------------------
def test_checked_in_openapi_document_equals_what_the_app_serves(http):
    checked_in = json.loads(OPENAPI_PATH.read_text())
    assert http.get("/openapi.json").json() == checked_in, (
        "regenerate: python -m service openapi --out openapi/openapi.json"
    )
    assert json.loads(openapi_document()) == checked_in


def test_openapi_documents_binary_bodies_and_error_codes():
    spec = json.loads(OPENAPI_PATH.read_text())
    compress = spec["paths"]["/compress"]["post"]
    body = compress["requestBody"]["content"]
    assert {"image/png", "image/jpeg", "image/webp", "multipart/form-data"} <= set(body)
    assert body["image/png"]["schema"] == {"type": "string", "format": "binary"}
    assert compress["responses"]["200"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    assert "X-Bits-Per-Pixel" in compress["responses"]["200"]["headers"]
    decompress = spec["paths"]["/decompress"]["post"]
    assert set(decompress["responses"]["200"]["content"]) == {"image/png", "image/jpeg", "image/webp"}
    assert {"304", "406", "409", "422", "429", "503", "504"} <= set(decompress["responses"])
    assert decompress["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_openapi_declares_the_bounds_the_server_enforces():
    """Clients generated from the contract refuse what the server would refuse (400 bad_parameter)."""
    spec = json.loads(OPENAPI_PATH.read_text())
    params = {p["name"]: p for p in spec["paths"]["/compress"]["post"]["parameters"]}
    (quality,) = [s for s in params["quality"]["schema"]["anyOf"] if s["type"] == "integer"]
    assert quality["minimum"] == 1 and not params["quality"].get("required")
    assert (params["effort"]["schema"]["minimum"], params["effort"]["schema"]["maximum"]) == (0, MAX_EFFORT)
    for op in ("/compress", "/decompress"):
        headers = {p["name"]: p for p in spec["paths"][op]["post"]["parameters"] if p["in"] == "header"}
        (timeout,) = [s for s in headers["x-request-timeout"]["schema"]["anyOf"] if s["type"] == "number"]
        assert timeout["exclusiveMinimum"] == 0
    assert "default_quality" in spec["components"]["schemas"]["ModelInfo"]["required"]
    for path in ("/health/live", "/health/ready"):
        assert set(spec["paths"][path]) == {"get", "head"}


def test_openapi_check_command_detects_a_stale_document(tmp_path, capsys):
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert main(["openapi", "--out", str(stale), "--check"]) == 1
    assert main(["openapi", "--out", str(stale)]) == 0
    assert main(["openapi", "--out", str(stale), "--check"]) == 0


# -- clients -----------------------------------------------------------------------------------------------------------
def test_sync_client_round_trip(client, weights_root):
    img = natural_image(40, 56, seed=2)
    result = client.compress(encode_image(img, "PNG"), quality=2)
    assert (result.model, result.quality, result.width, result.height) == (MODEL, 2, 56, 40)
    assert result.compressed_bytes == len(result.stream) and result.bpp > 0
    assert set(result.server_timing) == {"image-io", "queue", "inference", "entropy"}
    assert result.stream == local_codec(weights_root, 2).compress(img)
    back = client.decompress(result.stream)
    assert back.content_type == "image/png" and open_image(back.data).shape == img.shape
    assert client.decompress(result.stream, etag=back.etag).not_modified
    assert client.models()["default_model"] == MODEL and client.ready()
    assert "lic_http_requests_total" in client.metrics()


def test_sync_client_multipart_upload_equals_raw_upload(client):
    body = png(24, 24)
    assert client.compress(body, quality=1, multipart=True).stream == client.compress(body, quality=1).stream


def test_client_errors_carry_the_servers_code(client):
    with pytest.raises(ServiceClientError) as error:
        client.compress(png(8, 8), quality=99)
    assert (error.value.status, error.value.code) == (400, "bad_parameter")
    with pytest.raises(ServiceClientError) as error:
        client.decompress(b"LICx" + bytes(60))
    assert error.value.status == 422


def test_async_client_round_trip(server):
    async def scenario():
        async with AsyncLicClient(server.url) as client:
            results = await asyncio.gather(*(client.compress(png(32, 32, s), quality=1) for s in range(4)))
            back = await client.decompress(results[0].stream, accept="image/webp")
            assert await client.ready()
            return results, back, await client.models()

    results, back, models = asyncio.run(scenario())
    assert all(r.width == 32 for r in results)
    assert back.content_type == "image/webp" and models["models"][0]["model"] == MODEL


def test_server_timing_parser():
    assert parse_server_timing('queue;dur=1.5, inference;dur=2;desc="batch of 2", x') == {
        "queue": 1.5,
        "inference": 2.0,
    }


# -- command line ------------------------------------------------------------------------------------------------------
def test_cli_compress_then_decompress_round_trips(server, tmp_path, capsys, weights_root):
    img = natural_image(30, 50, seed=5)
    source, stream, back = tmp_path / "in.png", tmp_path / "out.bin", tmp_path / "back.png"
    source.write_bytes(encode_image(img, "PNG"))
    assert main(["compress", str(source), str(stream), "--quality", "1", "--url", server.url]) == 0
    assert "bpp" in capsys.readouterr().out
    assert stream.read_bytes() == local_codec(weights_root, 1).compress(img)
    assert main(["decompress", str(stream), str(back), "--url", server.url]) == 0
    assert np.array_equal(open_image(back), local_codec(weights_root, 1).decompress(stream.read_bytes()))
    webp = tmp_path / "back.webp"
    assert main(["decompress", str(stream), str(webp), "--url", server.url]) == 0
    assert webp.read_bytes()[8:12] == b"WEBP"


def test_cli_reports_server_errors_with_their_code(server, tmp_path, capsys):
    source = tmp_path / "in.png"
    source.write_bytes(png(8, 8))
    assert main(["compress", str(source), str(tmp_path / "o.bin"), "--quality", "42", "--url", server.url]) == 1
    assert "bad_parameter" in capsys.readouterr().err


def test_cli_compress_without_quality_gets_the_models_default_quality(server, tmp_path, capsys):
    source, stream = tmp_path / "in.png", tmp_path / "out.bin"
    source.write_bytes(png(16, 24))
    assert main(["compress", str(source), str(stream), "--url", server.url]) == 0
    default = registry.default_quality(server.service.pool.served()[MODEL])
    assert container.parse_header(stream.read_bytes()).quality == default
    assert f"q{default}" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(
    "env,port",
    [({}, 8000), ({"LIC_PORT": "9123"}, 9123), ({"PORT": "9124"}, 9124), ({"LIC_PORT": "1", "PORT": "9125"}, 9125)],
)
def test_make_serve_listens_where_lic_port_says_like_python_m_service(monkeypatch, env, port):
    """LIC_PORT (the service's setting) picks the port for make serve as for python -m service and the images;
    PORT stays as make serve's alias and wins, like --port. The command make would run is resolved the way
    ``python -m service`` resolves it (settings from the environment, then the flags)."""
    for name in ("PORT", "HOST", "LIC_PORT", "LIC_HOST", "LIC_SETTINGS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dry_run = subprocess.run(["make", "-n", "serve"], cwd=OPENAPI_PATH.parents[1], capture_output=True, text=True)
    (command,) = [line for line in dry_run.stdout.splitlines() if "-m service" in line]
    argv = shlex.split(command)
    assert argv[:3] == [".venv/bin/python", "-m", "service"]
    args = parse_args(argv[3:])
    assert uvicorn_config(None, load_settings(args.settings), args.host, args.port).port == port


@pytest.mark.parametrize("argv", [[], ["--port", "9000"], ["serve", "--host", "0.0.0.0", "--port", "9000"]])
def test_serve_is_the_default_command(argv):
    args = parse_args(argv)
    assert args.command == "serve" and args.port in (None, 9000)


def test_serve_without_weights_exits_with_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIC_WEIGHTS_ROOT", str(tmp_path))
    assert main(["serve", "--port", "0"]) == 2
    assert "cannot serve: no shipped weights" in capsys.readouterr().err


def test_cli_loadtest_reports_capacity_overload_and_recovery(server, tmp_path, capsys):
    image = tmp_path / "in.png"
    image.write_bytes(png(32, 32))
    out = tmp_path / "load.json"
    args = ["loadtest", str(image), "--quality", "1", "--url", server.url, "--seconds", "1", "--json", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"capacity", "overload", "recovery"}
    assert report["capacity"]["ok"] > 0 and report["overload"]["offered_rps"] > report["capacity"]["offered_rps"]
    assert all(phase["failed"] == 0 for phase in report.values())
    assert "overload" in capsys.readouterr().out
