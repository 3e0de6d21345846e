"""Stored streams outlive weight upgrades: a server serving version 2 still decodes every stream made by the
installed version 1, bit-exactly, and says which version did; streams of weights it does not have get 409."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

pytest.register_assert_rewrite("service_fixtures")

from service_fixtures import (  # noqa: E402
    ARCH,
    MODEL,
    PRESET,
    QUALITIES,
    TinyHyperprior,  # noqa: E402
    build_weights_root,
    png,
    running,
)
from test_service_load import sample_value  # noqa: E402

from model_store import registry  # noqa: E402
from model_store.codec import ImageCodec  # noqa: E402
from model_store.image_io import open_image  # noqa: E402

pytest_plugins = ("service_fixtures",)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Version 1 (seed 0) and version 2 (seed 1) of the test model, side by side under one root."""
    root = build_weights_root(tmp_path_factory.mktemp("versions"), seed=0)  # writes version "1"
    models = {}
    for quality in QUALITIES:
        torch.manual_seed(1000 + quality)
        model = TinyHyperprior()
        with torch.no_grad():
            model.g_a[-1].weight.mul_(100.0)
        models[quality] = model
    registry.write_model_version(models, ARCH, PRESET, "2", root=root)
    registry.refresh()
    return root


def codec_of(root, version: str, quality: int) -> ImageCodec:
    registry.refresh()
    entry = registry._all_versions(root)[MODEL][version][quality]
    return ImageCodec.from_entry(entry)


def decompress(url: str, stream: bytes) -> httpx.Response:
    return httpx.post(url + "/decompress", content=stream, headers={"Content-Type": "application/octet-stream"})


def test_the_newest_version_is_served_and_named_in_the_response(two_versions):
    with running(two_versions) as server:
        r = httpx.post(
            server.url + "/compress", params={"quality": 1}, content=png(32, 32), headers={"Content-Type": "image/png"}
        )
        assert r.headers["x-weights-version"] == "2"
        assert r.content == codec_of(two_versions, "2", 1).compress(open_image(png(32, 32)))


def test_a_stream_of_an_older_installed_version_decodes_bit_exactly_with_its_own_weights(two_versions):
    old = codec_of(two_versions, "1", 2)
    image = open_image(png(40, 24))
    stream = old.compress(image)
    with running(two_versions, legacy_instances=1) as server:
        first, again = decompress(server.url, stream), decompress(server.url, stream)
        metrics = httpx.get(server.url + "/metrics").text
    assert first.status_code == again.status_code == 200
    assert first.headers["x-weights-version"] == "1"
    assert np.array_equal(open_image(first.content), old.decompress(stream))
    assert first.content == again.content
    assert sample_value(metrics, "lic_legacy_decodes_total", model=MODEL, quality="2", version="1") == 2


def test_a_stream_of_an_installed_but_unserved_quality_decodes_too(two_versions):
    old = codec_of(two_versions, "1", 2)
    stream = old.compress(open_image(png(16, 16)))
    with running(two_versions, models={MODEL: [1]}) as server:  # quality 2 is not served, but installed
        r = decompress(server.url, stream)
    assert r.status_code == 200 and np.array_equal(open_image(r.content), old.decompress(stream))


def test_a_stream_of_weights_that_are_not_installed_gets_409_naming_the_digest(two_versions, tmp_path):
    stranger = codec_of(build_weights_root(tmp_path / "elsewhere", seed=7), "1", 1)
    stream = stranger.compress(open_image(png(16, 16)))
    with running(two_versions) as server:
        r = decompress(server.url, stream)
    assert r.status_code == 409 and r.json()["code"] == "weights_mismatch"
    assert stranger.identity.digest.hex()[:12] in r.json()["error"]


def test_the_library_decoder_also_picks_the_weights_a_stream_names(two_versions):
    from model_store.codec import codec_for_stream

    for version in ("1", "2"):
        codec = codec_of(two_versions, version, 1)
        stream = codec.compress(open_image(png(16, 16)))
        assert codec_for_stream(stream, root=two_versions).identity.digest == codec.identity.digest


def test_after_the_default_model_changes_streams_of_the_old_default_still_decode():
    """The shipped default has moved (wacnn-small, then tic-small v2, then erstc-small v3, then erstc-small-vr v5): a
    server started with the current default serves only it, yet a stream of another shipped model decodes, with the
    weights that made it."""
    shipped = registry.shipped_models()
    default = registry.default_model()
    others = sorted(set(shipped) - {default})
    if not others:
        pytest.skip("only one shipped model")
    old = ImageCodec.from_entry(registry.resolve(others[0], shipped[others[0]][0]))
    stream = old.compress(open_image(png(48, 64)))
    with running(registry.WEIGHTS_ROOT, models={default: [shipped[default][0]]}, legacy_instances=1) as server:
        models = httpx.get(server.url + "/v1/models").json()
        r = decompress(server.url, stream)
    assert [m["model"] for m in models["models"]] == [default]  # not served...
    assert r.status_code == 200, r.text  # ...but decoded
    assert np.array_equal(open_image(r.content), old.decompress(stream))


def test_a_server_pinned_to_the_older_container_format_writes_it_and_reads_both(two_versions):
    """LIC_STREAM_FORMAT_VERSION=1 while a rollout still has decoders that read only version 1."""
    from model_store import container

    image = png(32, 48)
    current = codec_of(two_versions, "2", 1).compress(open_image(image))
    with running(two_versions, stream_format_version=1) as server:
        r = httpx.post(
            server.url + "/compress", params={"quality": 1}, content=image, headers={"Content-Type": "image/png"}
        )
        decoded_new = decompress(server.url, current)
        decoded_old = decompress(server.url, r.content)
    assert r.status_code == 200 and container.parse_header(r.content).version == 1
    assert container.parse_header(current).version == container.FORMAT_VERSION == 2
    assert container.unpack(r.content).payloads == container.unpack(current).payloads
    assert decoded_new.status_code == decoded_old.status_code == 200 and decoded_new.content == decoded_old.content


def test_a_format_version_no_decoder_reads_cannot_be_configured(two_versions):
    from service.settings import ServiceSettings

    with pytest.raises(ValueError, match="stream_format_version"):
        ServiceSettings(weights_root=two_versions, stream_format_version=3)
