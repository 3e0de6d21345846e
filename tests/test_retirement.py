"""Retiring superseded weights keeps the budget for served ones and loses nothing: a retired file leaves the tree,
git history keeps its bytes, a stream naming it gets 410 with the restore command, and after the restore it
decodes bit-exactly again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

pytest.register_assert_rewrite("service_fixtures")

from conftest import load_script  # noqa: E402
from service_fixtures import ARCH, MODEL, PRESET, QUALITIES, TinyHyperprior, build_weights_root, png, running  # noqa: E402

from model_store import model_card, registry, retirement  # noqa: E402
from model_store.codec import ImageCodec, codec_for_stream  # noqa: E402
from model_store.errors import WeightsFileError, WeightsRetiredError  # noqa: E402
from model_store.image_io import open_image  # noqa: E402

pytest_plugins = ("service_fixtures",)
QUIET = dict(log=lambda _line: None)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def write_version_2(root: Path) -> None:
    models = {}
    for quality in QUALITIES:
        torch.manual_seed(500 + quality)
        models[quality] = TinyHyperprior()
        with torch.no_grad():
            models[quality].g_a[-1].weight.mul_(100.0)
    registry.write_model_version(models, ARCH, PRESET, "2", root=root)


def make_repo(tmp_path: Path, commit: bool = True) -> Path:
    """A git repository whose weights root holds version 1 and version 2 (every v1 file superseded)."""
    repo = tmp_path / "repo"
    root = build_weights_root(repo / "weights")
    write_version_2(root)
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    if commit:
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "weights")
    registry.refresh()
    return repo


def decompress(url: str, stream: bytes) -> httpx.Response:
    return httpx.post(url + "/decompress", content=stream, headers={"Content-Type": "application/octet-stream"})


def version_1_stream(root: Path, quality: int = 1) -> tuple:
    codec = ImageCodec.from_entry(registry._all_versions(root)[MODEL]["1"][quality])
    stream = codec.compress(open_image(png(24, 32)))
    return stream, codec.decompress(stream)


def test_retire_removes_only_files_no_newest_version_serves_and_records_a_commit_holding_them(tmp_path):
    repo = make_repo(tmp_path)
    root = repo / "weights"
    retired = retirement.retire(root, repo, **QUIET)
    assert [p.relative_to(root).as_posix() for p in retired] == [f"{MODEL}/1/q{q}.safetensors" for q in QUALITIES]
    assert not any(p.exists() for p in retired)
    head = git(repo, "rev-parse", "HEAD")
    manifest = json.loads((root / MODEL / "1" / "manifest.json").read_text())
    for quality, item in manifest["qualities"].items():
        assert item["retired"] == {"commit": head, "path": f"weights/{MODEL}/1/q{quality}.safetensors"}
    assert f"restore {MODEL} 1" in model_card.render(manifest, None).split("## Operating points")[0]
    # the served version is untouched and still loads; a second run has nothing left to retire
    assert all(ImageCodec.from_entry(registry.resolve(MODEL, q, root=root)) for q in QUALITIES)
    assert retirement.retire(root, repo, **QUIET) == [] and retirement.superseded(root) == []


def test_the_weights_check_accepts_a_retired_file_being_absent_and_nothing_else(tmp_path):
    verify = load_script("verify_weights")
    repo = make_repo(tmp_path)
    root = repo / "weights"
    retirement.retire(root, repo, **QUIET)
    assert verify.verify(root, log=lambda _: None) == []
    (root / MODEL / "2" / "q1.safetensors").unlink()  # a served file is never allowed to be missing
    assert any("q1" in p and "missing" in p for p in verify.verify(root, log=lambda _: None))


def test_a_file_git_does_not_hold_is_not_retired_and_nothing_is_deleted(tmp_path):
    repo = make_repo(tmp_path, commit=False)
    root = repo / "weights"
    before = sorted(root.rglob("*"))
    with pytest.raises(WeightsFileError, match="q1.safetensors"):
        retirement.retire(root, repo, **QUIET)
    assert sorted(root.rglob("*")) == before
    assert "retired" not in (root / MODEL / "1" / "manifest.json").read_text()


def test_a_stream_of_retired_weights_gets_410_naming_the_restore_command_then_decodes_after_it(tmp_path):
    repo = make_repo(tmp_path)
    root = repo / "weights"
    stream, expected = version_1_stream(root, quality=2)
    retirement.retire(root, repo, **QUIET)
    registry.refresh()
    with pytest.raises(WeightsRetiredError, match=f"model_store.retirement restore {MODEL} 1"):
        codec_for_stream(stream, root=root)
    with running(root, legacy_instances=1) as server:
        gone = decompress(server.url, stream)
    assert gone.status_code == 410 and gone.json()["code"] == "weights_retired"
    assert f"python -m model_store.retirement restore {MODEL} 1" in gone.json()["error"]

    written = retirement.restore(root, repo, MODEL, "1", **QUIET)
    assert [p.name for p in written] == [f"q{q}.safetensors" for q in QUALITIES]
    registry.refresh()
    assert np.array_equal(codec_for_stream(stream, root=root).decompress(stream), expected)
    with running(root, legacy_instances=1) as server:
        back = decompress(server.url, stream)
    assert back.status_code == 200 and back.headers["x-weights-version"] == "1"
    assert np.array_equal(open_image(back.content), expected)


def test_restore_refuses_bytes_that_differ_from_the_manifest(tmp_path):
    repo = make_repo(tmp_path)
    root = repo / "weights"
    retirement.retire(root, repo, **QUIET)
    manifest_path = root / MODEL / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["qualities"]["1"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsFileError, match="sha256"):
        retirement.restore(root, repo, MODEL, "1", **QUIET)
    assert not (root / MODEL / "1" / "q1.safetensors").exists()


def test_a_release_cannot_serve_a_retired_file_without_restoring_it(tmp_path):
    repo = make_repo(tmp_path)
    root = repo / "weights"
    retirement.retire(root, repo, **QUIET)
    registry.refresh()
    with pytest.raises(WeightsRetiredError, match="restore it first"):
        registry.write_model_version({}, ARCH, PRESET, "3", root=root, reused={1: "1"})


def test_the_repository_serves_no_retired_file_and_carries_every_file_it_serves():
    """What a checkout serves is all present; what it does not serve any more has been retired (release.sh
    retires after every release), so the weights budget holds served files, and the default model's previous
    version, only."""
    registry.refresh()
    for entries in registry._index().values():
        for entry in entries.values():
            assert entry.path.is_file() and not entry.retired, (entry.model_id, entry.version, entry.quality)
    assert retirement.superseded() == []
    assert all(path.is_file() for path in retirement.previous_default_files())


def test_the_default_models_previous_version_is_kept_until_the_release_after(tmp_path):
    """Clients store the default model's streams in bulk: the version a release just replaced is not superseded
    (its streams decode without a restore); one release later it is."""
    repo = make_repo(tmp_path)
    root = repo / "weights"
    assert len(retirement.superseded(root)) == len(QUALITIES)  # no default.json: nothing is kept
    (root / "default.json").write_text(json.dumps({"model": MODEL}))
    assert retirement.superseded(root) == [] and len(retirement.previous_default_files(root)) == len(QUALITIES)
    models = {}
    for quality in QUALITIES:
        torch.manual_seed(900 + quality)
        models[quality] = TinyHyperprior()
    registry.write_model_version(models, ARCH, PRESET, "3", root=root)
    registry.refresh()
    assert sorted(f.path.parent.name for f in retirement.superseded(root)) == ["1"] * len(QUALITIES)


def test_a_file_named_by_many_qualities_is_labelled_by_runs_not_by_every_code():
    """A variable-rate file is named by every code of its knob: ``q1-q255``, not 255 names on one line."""
    from model_store.retirement import WeightsFile

    names = tuple(("erstc-small-vr", "v1", q) for q in range(1, 256)) + (("erstc-small-vr", "v2", 3),)
    assert WeightsFile(Path("x"), "0" * 64, names, None).label == "erstc-small-vr v1 q1-q255, erstc-small-vr v2 q3"
    mixed = tuple(("m", "v1", q) for q in (1, 3, 4, 5, 9, 10))
    assert WeightsFile(Path("x"), "0" * 64, mixed, None).label == "m v1 q1, q3-q5, q9, q10"
