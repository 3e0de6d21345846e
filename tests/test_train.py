"""Training entry point: runs, resumes where it stopped, exports weights the registry and codec can load."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import natural_image, tiny_config

from model_store import registry
from model_store.architectures.registry import create_model, get_preset
from model_store.codec import load_codec
from model_store.train import TrainConfig, amp_supported, build_data, export, lr_at, train, validate


def test_learning_rate_warms_up_then_decays_late():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=100, decay_at=0.9, decay_factor=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(50, cfg) == pytest.approx(1e-3)
    assert lr_at(95, cfg) == pytest.approx(1e-4)


def test_training_resumes_from_its_last_checkpoint(image_dirs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_dirs, out, steps=2))
    train(tiny_config(image_dirs, out, steps=3))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]  # the starting point's score, then the second call continued at step 3
    assert (out / "best.pt").exists()


def test_exported_weights_load_and_round_trip(image_dirs, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(image_dirs, out, steps=1))
    root = tmp_path / "weights"
    folder = export("stf", "tiny", "v1", {2: str(out / "last.pt")}, root=str(root))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["qualities"]["2"]["sha256"] == registry.sha256_file(folder / "q2.safetensors")
    codec = load_codec("stf-tiny", 2, root=root)
    img = natural_image(70, 90)
    assert codec.decompress(codec.compress(img)).shape == img.shape
    # a second load reads the stored CDF tables and produces the same bytes
    assert load_codec("stf-tiny", 2, root=root).compress(img) == codec.compress(img)


def test_exporting_a_checkpoint_again_writes_the_same_bytes(image_dirs, tmp_path):
    """Streams name their weights by sha256, so a re-export (another process, another thread count) must not mint a
    new identity for the same checkpoint: tensors, CDF tables and the safetensors header are all deterministic."""
    out = tmp_path / "run"
    train(tiny_config(image_dirs, out, steps=1))
    digests = []
    for n in (1, 2):  # conftest's autouse fixture restores the thread count
        torch.set_num_threads(n)
        folder = export("stf", "tiny", "v1", {2: str(out / "last.pt")}, root=str(tmp_path / f"weights{n}"))
        digests.append(registry.sha256_file(folder / "q2.safetensors"))
    assert digests[0] == digests[1]


def test_fine_tuning_can_start_from_shipped_safetensors(image_dirs, tmp_path):
    """A fresh machine has no runs/: a new quality starts from an installed release's fp16 weights."""
    import dataclasses

    import torch

    from model_store.architectures.registry import create_model
    from model_store.train import load_weights_only

    out = tmp_path / "base"
    train(tiny_config(image_dirs, out, steps=1))
    folder = export("stf", "tiny", "v1", {2: str(out / "last.pt")}, root=str(tmp_path / "weights"))
    shipped = registry.load_model(registry.resolve("stf-tiny", 2, root=tmp_path / "weights"))

    fresh = create_model("stf", "tiny", 4)
    load_weights_only(fresh, str(folder / "q2.safetensors"))
    for name, p in shipped.named_parameters():
        assert torch.equal(dict(fresh.named_parameters())[name], p), name

    cfg = dataclasses.replace(tiny_config(image_dirs, tmp_path / "q4", steps=1), quality=4)
    cfg = dataclasses.replace(cfg, init_from=str(folder / "q2.safetensors"))
    assert train(cfg).exists()
    assert json.loads((tmp_path / "q4" / "config.json").read_text())["init_from"].endswith("q2.safetensors")


def test_export_keeps_an_installed_quality_with_at_version(image_dirs, tmp_path):
    """``QUALITY=@v1`` on the export command line carries v1's file over instead of a checkpoint."""
    from model_store.train import parse_args

    out = tmp_path / "run"
    train(tiny_config(image_dirs, out, steps=1))
    root = tmp_path / "weights"
    export("stf", "tiny", "v1", {2: str(out / "last.pt")}, root=str(root))
    mode, args, runs = parse_args(["export", "--arch", "stf", "--preset", "tiny", "--version", "v2", "2=@v1"])
    assert (mode, runs) == ("export", {2: "@v1"})
    folder = export("stf", "tiny", "v2", runs, root=str(root))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["qualities"]["2"]["stored_in"] == "v1"
    assert manifest["recipe"]["runs"]["2"] == {"reused_from": "v1"}
    assert not list(folder.glob("*.safetensors"))
    assert load_codec("stf-tiny", 2, root=root).identity.digest.hex() == manifest["qualities"]["2"]["sha256"]


def test_a_time_boxed_run_stops_validated_checkpointed_and_decayed(image_dirs, tmp_path):
    """--max-minutes: a lent GPU's budget ends the call cleanly, and the late lr decay follows the clock."""
    import dataclasses

    cfg = dataclasses.replace(tiny_config(image_dirs, tmp_path / "run", steps=1000), max_minutes=1e-6, eval_every=500)
    train(cfg)
    start, record = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert start["step"] == 0 and record["step"] == 1 and "val" in record  # stopped after one step, validated anyway
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()

    timed = TrainConfig(lr=1e-3, warmup_steps=0, steps=100, decay_at=0.8, decay_factor=0.1, max_minutes=10)
    assert lr_at(5, timed, elapsed_s=60) == pytest.approx(1e-3)  # 10 % of the time, 5 % of the steps
    assert lr_at(5, timed, elapsed_s=8.5 * 60) == pytest.approx(1e-4)  # 85 % of the time: decayed


def test_a_cpu_time_box_counts_this_process_cpu_seconds_and_logs_them(image_dirs, tmp_path, monkeypatch):
    """--budget-clock cpu: side-by-side experiments stop after equal compute, however busy the machine is (a run
    that gets no CPU does not use up its box); every record carries cpu_s next to the wall-clock elapsed_s."""
    import dataclasses
    import time

    cfg = dataclasses.replace(tiny_config(image_dirs, tmp_path / "cpu", steps=3), max_minutes=1e-6, eval_every=500)
    monkeypatch.setattr(time, "process_time", lambda: 0.0)  # a starved run: its CPU clock stands still
    train(dataclasses.replace(cfg, budget_clock="cpu"))
    records = [json.loads(line) for line in (tmp_path / "cpu" / "log.jsonl").read_text().splitlines()][1:]
    assert [r["step"] for r in records] == [1, 2, 3] and all("cpu_s" in r and "elapsed_s" in r for r in records)
    train(dataclasses.replace(cfg, out=str(tmp_path / "wall")))  # the wall clock ran out after the first step
    assert len((tmp_path / "wall" / "log.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="budget-clock"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "bad"), budget_clock="gpu"))


@pytest.mark.skipif(not amp_supported(torch.device("cpu")), reason="this CPU has no native bf16")
def test_mixed_precision_trains_on_a_cpu_with_native_bf16(image_dirs, tmp_path):
    out = tmp_path / "amp"
    train(dataclasses.replace(tiny_config(image_dirs, out, steps=2), amp=True))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["bpp"] > 0 for r in records)


def test_a_compiled_run_takes_the_steps_an_eager_run_takes(image_dirs, tmp_path, monkeypatch):
    """--compile changes the speed, not the maths: the same run logs the same losses to float rounding, and
    validates and checkpoints the eager model. (Traced into graphs that then run eagerly: inductor's C++
    compilation took minutes here; its loss and gradients matched eager to 2e-6 on erstc-small-vr, HISTORY
    session 26.)"""
    import model_store.train as training

    graphs = []

    def record(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    torch._dynamo.reset()
    monkeypatch.setattr(training, "COMPILE_BACKEND", record)
    logs = {}
    for compiled in (False, True):
        out = tmp_path / f"compiled-{compiled}"
        train(dataclasses.replace(tiny_config(image_dirs, out, steps=2), compile=compiled))
        logs[compiled] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]
    assert graphs and [r["step"] for r in logs[True]] == [1, 2]  # the compiled run did go through dynamo
    for eager, compiled in zip(logs[False], logs[True]):
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
        assert compiled["bpp"] == pytest.approx(eager["bpp"], rel=1e-4)


def test_a_run_that_never_beats_its_starting_point_keeps_it_as_best(image_dirs, tmp_path):
    """Fine-tuning a shipped release can make it worse (too high an lr undoes a converged run): best.pt must then
    be the starting weights, never the least bad of the worse ones."""
    out = tmp_path / "wrecked"
    train(dataclasses.replace(tiny_config(image_dirs, out, steps=3), lr=5.0, warmup_steps=0, eval_every=1))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and all(not r["val"]["loss"] < records[0]["val"]["loss"] for r in records[1:])
    assert torch.load(out / "best.pt", weights_only=False)["step"] == 0


def test_weight_averaging_is_what_gets_validated_saved_and_resumed(image_dirs, tmp_path):
    out = tmp_path / "ema"
    cfg = dataclasses.replace(tiny_config(image_dirs, out, steps=2), ema=0.5, eval_every=1)
    train(cfg)
    train(dataclasses.replace(cfg, steps=3))
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["ema"]["updates"] == 3  # the average survived the restart
    averaged, raw = last["ema"]["model"], last["model"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw if raw[k].is_floating_point())
    # the score logged at step 3 is the averaged weights' (and best.pt is chosen on it), not the raw weights'
    model = create_model("stf", "tiny", 2)
    _, val_images = build_data(cfg)
    lmbda = get_preset("stf", "tiny").lambdas[2]
    scores = {}
    for name, state in (("averaged", averaged), ("raw", raw)):
        model.load_state_dict(state)
        scores[name] = validate(model, val_images, lmbda, torch.device("cpu"))["loss"]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    assert logged["step"] == 3 and logged["val"]["loss"] == pytest.approx(scores["averaged"], rel=1e-6)
    assert scores["averaged"] != pytest.approx(scores["raw"], rel=1e-6)


def poison_loss(monkeypatch, bad_calls):
    """rd_loss whose loss is NaN on the given calls (1-based), as a bf16 overflow would make it."""
    from model_store import train as train_module

    real, calls = train_module.rd_loss, []

    def rd_loss(out, x, lmbda):
        losses = real(out, x, lmbda)
        calls.append(1)
        if len(calls) in bad_calls:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(train_module, "rd_loss", rd_loss)


def test_a_step_with_a_non_finite_gradient_is_skipped_not_applied(image_dirs, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    poison_loss(monkeypatch, bad_calls={2})
    train(dataclasses.replace(tiny_config(image_dirs, out, steps=3), eval_every=1))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]
    assert [r["skipped"] for r in records] == [False, True, False]
    state = torch.load(out / "last.pt", weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert all(math.isfinite(r["val"]["loss"]) for r in records)


def test_training_stops_when_every_step_is_non_finite(image_dirs, tmp_path, monkeypatch):
    from model_store import train as train_module

    monkeypatch.setattr(train_module, "MAX_BAD_STEPS", 2)
    poison_loss(monkeypatch, bad_calls=set(range(1, 10)))
    with pytest.raises(FloatingPointError, match="2 steps in a row"):
        train(tiny_config(image_dirs, tmp_path / "diverged", steps=5))


def test_fine_tuning_from_fp16_weights_keeps_the_likelihood_floor(tmp_path):
    """fp16 rounds compressai's 1e-9 likelihood floor to 0; a fine-tune that loaded that 0 could see an infinite
    rate (it did: zigzag initialised from STF's fp16 weights started at bpp = inf, and STF diverged on a GPU)."""
    from model_store.train import load_weights_only

    torch.manual_seed(0)
    fresh = create_model("zigzag", "tiny", 3).state_dict()
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in fresh.items()}
    assert state["gaussian_conditional.likelihood_lower_bound.bound"].item() == 0
    torch.save({"model": state}, tmp_path / "fp16.pt")
    model = create_model("zigzag", "tiny", 3)
    load_weights_only(model, str(tmp_path / "fp16.pt"))
    floors = [v.item() for k, v in model.state_dict().items() if k.endswith("likelihood_lower_bound.bound")]
    assert len(floors) == 2 and floors == pytest.approx([1e-9, 1e-9])
    assert all(torch.equal(model.state_dict()[k], v.float()) for k, v in state.items() if k.startswith("g_a."))


def test_a_deeper_sibling_starts_from_a_shallower_model_at_the_same_function(tmp_path):
    """``tic_plus`` fine-tuned from ``tic`` weights: the Swin blocks tic lacks start as identity, so the grown model
    computes exactly what the trained one did (random new blocks would throw that training away)."""
    from model_store.codec import image_to_tensor
    from model_store.train import load_weights_only

    torch.manual_seed(0)
    shallow = create_model("tic", "tiny", 3).eval()
    torch.save({"model": shallow.state_dict()}, tmp_path / "tic.pt")
    deep = create_model("tic_plus", "tiny", 3)
    load_weights_only(deep, str(tmp_path / "tic.pt"))
    deep.eval()
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in shallow.parameters())

    x = image_to_tensor(natural_image(64, 64))[None]
    with torch.no_grad():
        a, b = shallow(x), deep(x)
    assert torch.equal(a["x_hat"], b["x_hat"])
    for key in a["likelihoods"]:
        assert torch.equal(a["likelihoods"][key], b["likelihoods"][key])

    # and the new blocks are trainable parameters, not frozen zeros: one step moves them
    deep.train()
    out = deep(x)
    (out["x_hat"] - x).pow(2).mean().backward()
    grown = deep.g_a[1].residual_group.blocks[1]  # tic-tiny has one block in its first Swin stage
    assert grown.attn.proj.weight.grad.abs().sum() > 0


def test_a_sibling_shares_what_matches_by_name_and_shape(tmp_path, capsys):
    """``stf-small`` from a ``wacnn-small`` checkpoint: the hyperprior and entropy model they share are loaded, the
    transforms that differ keep their initialisation, and the run says so instead of failing on the shapes."""
    from model_store.train import load_weights_only

    torch.manual_seed(0)
    wacnn = create_model("wacnn", "small", 3)
    torch.save({"model": wacnn.state_dict()}, tmp_path / "wacnn.pt")
    stf = create_model("stf", "small", 3)
    before = {k: v.clone() for k, v in stf.state_dict().items()}
    load_weights_only(stf, str(tmp_path / "wacnn.pt"))

    ours, theirs = dict(stf.named_parameters()), dict(wacnn.named_parameters())
    shared = [k for k in ours if k in theirs and ours[k].shape == theirs[k].shape]
    assert any(k.startswith("cc_mean_transforms") for k in shared) and any(k.startswith("h_a") for k in shared)
    for k in shared:
        assert torch.equal(ours[k], theirs[k]), k
    for k in ours:
        if k.startswith(("g_a", "g_s")) and k not in shared:
            assert torch.equal(ours[k], before[k]), k
    assert "234 parameters absent from" in capsys.readouterr().err  # g_a/g_s: their names differ between the two


def test_parameters_of_another_shape_are_left_as_initialised_not_an_error(tmp_path, capsys):
    """The tiny presets' hyperpriors differ in width: those parameters keep their initialisation."""
    from model_store.train import load_weights_only

    torch.save({"model": create_model("wacnn", "tiny", 3).state_dict()}, tmp_path / "wacnn.pt")
    stf = create_model("stf", "tiny", 3)
    before = stf.h_a[0].weight.clone()
    load_weights_only(stf, str(tmp_path / "wacnn.pt"))
    assert torch.equal(stf.h_a[0].weight, before)
    assert "of other shapes" in capsys.readouterr().err


def distilled_run(image_dirs, tmp_path, steps: int, **overrides) -> tuple[TrainConfig, list]:
    """Train a tiny STF for ``steps`` with a random tiny STF as its teacher; the config and the per-step records."""
    torch.manual_seed(1)
    torch.save({"model": create_model("stf", "tiny", 2).state_dict()}, tmp_path / "teacher.pt")
    out = tmp_path / "student"
    cfg = dataclasses.replace(
        tiny_config(image_dirs, out, steps=steps),
        teacher=f"stf={tmp_path / 'teacher.pt'}",
        decay_at=0.8,
        eval_every=100,
        **overrides,
    )
    train(cfg)
    return cfg, [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]


def test_distillation_pulls_the_analysis_towards_the_teacher_until_the_late_decay(image_dirs, tmp_path):
    """``--teacher ARCH=WEIGHTS``: the latent-matching term is logged and falls while it applies, and the decayed
    end of the run is the plain RD loss (no ``distill`` in the log)."""
    _, records = distilled_run(image_dirs, tmp_path, 20, distill_weight=100.0, lr=3e-3)
    distill = [r.get("distill") for r in records]
    assert all(d is not None for d in distill[:16]) and all(d is None for d in distill[16:])
    assert distill[15] < 0.5 * distill[0]


def test_distillation_can_end_before_the_decay(image_dirs, tmp_path):
    """``--distill-until 0.4``: the term applies to the first 40 % of the steps only, while the lr is still high."""
    cfg, records = distilled_run(image_dirs, tmp_path, 10, distill_until=0.4, warmup_steps=0)
    assert [r.get("distill") is not None for r in records] == [True] * 4 + [False] * 6
    assert [r["lr"] for r in records[4:8]] == [cfg.lr] * 4  # distillation ended while the lr was still high
    assert records[8]["lr"] < cfg.lr
    with pytest.raises(ValueError, match="needs --teacher"):
        train(dataclasses.replace(cfg, teacher=None, out=str(tmp_path / "no-teacher")))


def test_a_teacher_with_another_latent_is_refused_before_any_step(image_dirs, tmp_path):
    torch.save({"model": create_model("wacnn", "tiny", 2).state_dict()}, tmp_path / "wacnn.pt")
    cfg = dataclasses.replace(tiny_config(image_dirs, tmp_path / "run", steps=2), teacher=f"wacnn={tmp_path}/wacnn.pt")
    with pytest.raises(ValueError, match="distillation needs the same channels and stride"):
        train(cfg)
    assert not (tmp_path / "run" / "log.jsonl").exists()
    with pytest.raises(ValueError, match="ARCH=WEIGHTS"):
        train(dataclasses.replace(cfg, teacher=str(tmp_path / "wacnn.pt")))
    with pytest.raises(ValueError, match="not a complete stf-tiny model"):
        train(dataclasses.replace(cfg, teacher=f"stf={tmp_path}/wacnn.pt"))


def test_a_crop_too_small_for_the_entropy_model_is_warned_about(image_dirs, tmp_path, capsys):
    """zigzag's chunk nets work per quadrant with window-8 Swin layers: trained on 128² crops they never see a
    photo's quadrant, so zigzag-small asks for 256² (the paper's crop); STF's conv entropy model takes any crop."""
    assert create_model("zigzag", "small", 3).min_train_crop == 256
    assert create_model("stf", "small", 3).min_train_crop == 0
    zigzag = create_model("zigzag", "tiny", 2).min_train_crop
    train(dataclasses.replace(tiny_config(image_dirs, tmp_path / "run", steps=1), arch="zigzag", crop=zigzag // 2))
    assert f"below zigzag-tiny's minimum training crop {zigzag}" in capsys.readouterr().err
