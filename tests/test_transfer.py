"""Checkpoints leave a GPU machine in parts under the return channel's size cap and come back whole or not at all."""

from __future__ import annotations

import pytest
from conftest import natural_image
from PIL import Image

from model_store.codec import load_codec
from model_store.train import TrainConfig, export, train
from model_store.transfer import MIB, TransferError, main, pack, unpack


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished tiny run, as the device would leave it under runs/."""
    root = tmp_path_factory.mktemp("device")
    for split, count in (("train", 2), ("val", 1)):
        (root / split).mkdir()
        for i in range(count):
            Image.fromarray(natural_image(96, 128, seed=i)).save(root / split / f"{i}.png")
    cfg = TrainConfig(arch="stf", preset="tiny", quality=2, out=str(root / "runs" / "stf-tiny-q2"),
                      train_dir=str(root / "train"), val_dir=str(root / "val"), steps=2, batch_size=2, crop=64,
                      workers=0, eval_every=1, ckpt_every=1, warmup_steps=1, threads=1)  # fmt: skip
    train(cfg)
    return root / "runs"


def test_parts_respect_the_size_cap_and_reassemble_into_an_exportable_checkpoint(runs, tmp_path):
    cap = 0.05  # MiB: forces several parts out of the tiny model
    index = pack(runs, tmp_path / "out", max_mib=cap)
    assert len(index["parts"]) > 1
    assert all((tmp_path / "out" / p).stat().st_size <= cap * MIB for p in index["parts"])
    (restored,) = unpack(tmp_path / "out", tmp_path / "here")
    assert restored == tmp_path / "here" / "stf-tiny-q2" / "best.pt"
    assert (restored.parent / "config.json").exists()

    folder = export("stf", "tiny", "v1", {2: str(restored)}, root=str(tmp_path / "weights"))
    from safetensors.torch import load_file

    shipped = load_file(str(folder / "q2.safetensors"))  # the fp16 transfer must not ship fp16's zero floor
    assert shipped["gaussian_conditional.likelihood_lower_bound.bound"].item() == pytest.approx(1e-9)
    img = natural_image(40, 56)
    codec = load_codec("stf-tiny", 2, root=tmp_path / "weights")
    assert codec.decompress(codec.compress(img)).shape == img.shape


def test_a_cut_or_missing_part_is_an_error_not_a_broken_checkpoint(runs, tmp_path):
    index = pack(runs, tmp_path / "out", max_mib=0.05)
    parts = index["parts"]
    last = tmp_path / "out" / parts[-1]
    last.write_bytes(last.read_bytes()[:-1])
    with pytest.raises(TransferError, match="sha256"):
        unpack(tmp_path / "out", tmp_path / "here")
    last.unlink()
    with pytest.raises(TransferError, match="missing parts"):
        unpack(tmp_path / "out", tmp_path / "here")
    assert not (tmp_path / "here" / "stf-tiny-q2" / "best.pt").exists()


def test_runs_share_parts_so_many_small_runs_cost_few_files(runs, tmp_path):
    """The device's return channel allows 8 files: three runs of ~0.1 MiB must not take three."""
    for name in ("stf-tiny-q3", "stf-tiny-q4"):
        (runs / name).mkdir(exist_ok=True)
        (runs / name / "best.pt").write_bytes((runs / "stf-tiny-q2" / "best.pt").read_bytes())
    try:
        index = pack(runs, tmp_path / "out", max_mib=1.0)
        assert len(index["runs"]) == 3 and len(index["parts"]) == 1
        restored = unpack(tmp_path / "out", tmp_path / "here")
        assert [p.parent.name for p in restored] == ["stf-tiny-q2", "stf-tiny-q3", "stf-tiny-q4"]
        assert len({p.read_bytes() for p in restored}) == 1
    finally:
        for name in ("stf-tiny-q3", "stf-tiny-q4"):
            (runs / name / "best.pt").unlink()
            (runs / name).rmdir()


def test_command_line_round_trip(runs, tmp_path, capsys):
    assert main(["pack", str(runs), str(tmp_path / "out")]) == 0
    assert "stf-tiny-q2" in capsys.readouterr().out
    assert main(["unpack", str(tmp_path / "out"), str(tmp_path / "here")]) == 0
    assert main(["unpack", str(tmp_path), str(tmp_path / "here")]) == 1  # no index: refused
