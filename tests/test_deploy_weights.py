"""scripts/verify_weights.py: the build-time check that baked-in weights match their manifests' sha256."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("service_fixtures")

from service_fixtures import MODEL  # noqa: E402

pytest_plugins = ("service_fixtures",)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "verify_weights.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture()
def root(weights_root, tmp_path) -> Path:
    """A private copy of the service tests' tiny weights root (built once per session)."""
    return Path(shutil.copytree(weights_root, tmp_path / "weights"))


def version_dir(root: Path) -> Path:
    return next(root.glob(f"{MODEL}/*"))


def test_matching_weights_pass(root):
    result = run(str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == 2 and "match their manifests" in result.stdout


def test_the_script_needs_only_the_standard_library(root):
    # it runs in the image's weights stage before anything is installed: no third-party imports allowed
    result = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), str(root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_flipped_byte_fails_with_the_file_named(root):
    path = version_dir(root) / "q2.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    result = run(str(root))
    assert result.returncode == 1
    assert "q2.safetensors" in result.stderr and "sha256" in result.stderr
    assert "q1.safetensors" not in result.stderr


def test_missing_file_and_wrong_size_fail(root):
    folder = version_dir(root)
    (folder / "q1.safetensors").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["qualities"]["2"]["bytes"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = run(str(root))
    assert result.returncode == 1
    assert "q1.safetensors: missing" in result.stderr and "bytes" in result.stderr


def test_manifest_in_the_wrong_folder_or_escaping_file_name_fails(root):
    folder = version_dir(root)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["qualities"]["1"]["file"] = "../../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(root / MODEL, root / "other-model")
    result = run(str(root))
    assert result.returncode == 1
    assert "plain name" in result.stderr and "lives in other-model" in result.stderr


def test_a_file_kept_from_an_earlier_version_is_verified_where_it_is_stored(root):
    folder = version_dir(root)
    newer = folder.parent / "v9"
    newer.mkdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = "v9"
    for item in manifest["qualities"].values():
        item["stored_in"] = folder.name
    (newer / "manifest.json").write_text(json.dumps(manifest))
    result = run(str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == 4 and f"(stored in {folder.name})" in result.stdout

    (folder / "q1.safetensors").write_bytes(b"tampered")  # both versions' entries now fail
    assert run(str(root)).stderr.count("q1.safetensors") == 2

    manifest["qualities"]["2"]["stored_in"] = "../.."
    (newer / "manifest.json").write_text(json.dumps(manifest))
    assert "plain names" in run(str(root)).stderr


def test_default_json_must_name_a_shipped_model(root):
    (root / "default.json").write_text(json.dumps({"model": "nope"}))
    assert run(str(root)).returncode == 1
    (root / "default.json").write_text(json.dumps({"model": MODEL}))
    assert run(str(root)).returncode == 0


def test_no_weights_is_an_error_unless_allowed(tmp_path):
    assert run(str(tmp_path)).returncode == 2
    assert run(str(tmp_path), "--allow-empty").returncode == 0
    assert run(str(tmp_path / "absent")).returncode == 2


def test_root_from_environment(root):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quiet"],
        capture_output=True,
        text=True,
        env={"LIC_WEIGHTS_ROOT": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0 and result.stdout == ""


def test_the_repository_weights_verify():
    weights = ROOT / "model_store" / "weights"
    if not any(weights.glob("*/*/manifest.json")):
        pytest.skip("no shipped weights in model_store/weights yet (the Docker build refuses to bake an empty root)")
    result = run(str(weights))
    assert result.returncode == 0, result.stderr
