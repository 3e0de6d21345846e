"""scripts/release.sh: one command turns training checkpoints into an installed, evaluated, documented version
(here a tiny STF trained for one step, a one-image validation set, a scratch weights root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import natural_image
from PIL import Image

from model_store import registry
from model_store.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_SOURCE = "tests/assets/val_citrus_384x256.png"


@pytest.fixture()
def release_tree(tmp_path):
    """A copy of the repo's release machinery whose weights, results and golden files are all scratch."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    tree = tmp_path / "repo"
    (tree / "scripts").mkdir(parents=True)
    for script in ("release.sh", "golden_stream.py", "ladder_check.py", "verify_weights.py"):
        shutil.copy(ROOT / "scripts" / script, tree / "scripts")
    (tree / "model_store").symlink_to(ROOT / "model_store")
    (tree / "tests" / "assets" / "golden").mkdir(parents=True)
    shutil.copy(ROOT / GOLDEN_SOURCE, tree / GOLDEN_SOURCE)
    (tree / "tests" / "assets" / "golden" / "golden.json").write_text("[]\n")
    for split, count in (("train", 2), ("val", 1)):
        (tmp_path / split).mkdir()
        for i in range(count):
            Image.fromarray(natural_image(64, 96, seed=i)).save(tmp_path / split / f"{i}.png")
    cfg = TrainConfig(arch="stf", preset="tiny", quality=2, out=str(tmp_path / "run"), steps=1, batch_size=2,
                      crop=64, workers=0, eval_every=1, ckpt_every=1, warmup_steps=1, threads=1,
                      train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"))  # fmt: skip
    train(cfg)
    return tree


def release(tree: Path, *args: str, notes: str = "one step on two synthetic images") -> subprocess.CompletedProcess:
    work = tree.parent
    env = dict(os.environ, PY=sys.executable, VAL=str(work / "val"), WEIGHTS=str(work / "weights"),
               RESULTS=str(work / "results"), NOTES=notes, OMP_NUM_THREADS="1")  # fmt: skip
    (work / "weights").mkdir(exist_ok=True)
    (work / "results").mkdir(exist_ok=True)
    return subprocess.run(["bash", "scripts/release.sh", *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_a_release_installs_evaluates_documents_and_freezes_the_new_files(release_tree):
    work = release_tree.parent
    proc = release(release_tree, "stf", "tiny", "v1", f"2={work / 'run' / 'best.pt'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    folder = work / "weights" / "stf-tiny" / "v1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["notes"] == "one step on two synthetic images"
    assert "2" in manifest["qualities"] and (folder / "MODEL_CARD.md").is_file()
    entry = registry.resolve("stf-tiny", 2, root=work / "weights")
    assert entry.version == "v1"

    report = json.loads((work / "results" / "eval_val.json").read_text())
    assert {"stf-tiny", "jpeg", "webp"} <= set(report["codecs"])  # learned and classical, the same run
    assert report["codecs"]["stf-tiny"]["points"][0]["n_images"] == 1
    assert (work / "results" / "rd_val.png").stat().st_size > 0

    golden = json.loads((release_tree / "tests" / "assets" / "golden" / "golden.json").read_text())
    assert [(g["model"], g["weights_version"], g["quality"]) for g in golden] == [("stf-tiny", "v1", 2)]
    assert (release_tree / "tests" / "assets" / "golden" / golden[0]["stream"]).stat().st_size > 0
    assert "qualities 2" in proc.stdout and "BD-rate" in proc.stdout


@pytest.mark.slow
def test_a_release_never_overwrites_a_shipped_version_and_needs_its_lineage(release_tree):
    work = release_tree.parent
    ckpt = f"2={work / 'run' / 'best.pt'}"
    no_notes = release(release_tree, "stf", "tiny", "v1", ckpt, notes="")
    assert no_notes.returncode == 2 and "NOTES" in no_notes.stderr
    (work / "weights" / "stf-tiny" / "v1").mkdir(parents=True)
    again = release(release_tree, "stf", "tiny", "v1", ckpt)
    assert again.returncode == 1 and "never overwritten" in again.stderr
    assert not (work / "results" / "eval_val.json").exists()  # refused before any work


@pytest.mark.slow
def test_several_releases_share_one_evaluation_and_keep_their_own_lineage(release_tree):
    work = release_tree.parent
    ckpt = f"2={work / 'run' / 'best.pt'}"
    proc = release(release_tree, "stf", "tiny", "v1", "--notes", "first", ckpt,
                   "+", "stf", "tiny", "v2", "--notes", "second\nline", ckpt, notes="")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("== evaluate") == 1
    for version, notes in (("v1", "first"), ("v2", "second\nline")):
        manifest = json.loads((work / "weights" / "stf-tiny" / version / "manifest.json").read_text())
        assert manifest["notes"] == notes
        assert (work / "weights" / "stf-tiny" / version / "MODEL_CARD.md").is_file()
    golden = json.loads((release_tree / "tests" / "assets" / "golden" / "golden.json").read_text())
    assert [(g["weights_version"], g["quality"]) for g in golden] == [("v1", 2), ("v2", 2)]
    assert "stf-tiny/v1/q2.safetensors" in proc.stdout and "retire them" in proc.stdout  # v2 supersedes it


@pytest.mark.slow
def test_a_release_without_lineage_among_several_refuses_them_all_before_any_work(release_tree):
    work = release_tree.parent
    ckpt = f"2={work / 'run' / 'best.pt'}"
    proc = release(release_tree, "stf", "tiny", "v1", "--notes", "first", ckpt, "+", "stf", "tiny", "v2", ckpt,
                   notes="")  # fmt: skip
    assert proc.returncode == 2 and "stf-tiny v2" in proc.stderr
    assert not (work / "results" / "eval_val.json").exists() and not (work / "weights" / "stf-tiny").exists()


@pytest.mark.slow
def test_a_release_whose_ladder_does_not_rise_stops_before_the_evaluation(release_tree):
    """The same weights as q2 and q3: q3 would sell no more bits for no better picture (the shipped-model test's
    rule), so the release stops on the test photo, before the long evaluation and with nothing installed."""
    work = release_tree.parent
    ckpt = work / "run" / "best.pt"
    proc = release(release_tree, "stf", "tiny", "v1", f"2={ckpt}", f"3={ckpt}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ladder: stf-tiny q2 -> q3" in proc.stderr and "== evaluate" not in proc.stdout
    assert not (work / "results" / "eval_val.json").exists() and not (work / "weights" / "stf-tiny").exists()
