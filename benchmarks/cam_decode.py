"""How much the wavefront buys for the causal-attention (CAM) context of TIC, TIC+ and ERSTC.

    python benchmarks/cam_decode.py [--archs tic tic_plus erstc] [--preset small] [--threads 2] [--repeats 3]

Three decoders of the same latent (768x512 image -> 32x48 positions), all in the canonical float64 path on the
CPU, measured in the same run:

* ``wavefront``: what the product ships: 3H+W-3 = 141 batched steps (``CausalContextCoding.code_latent``);
* ``raster``: the same per-position kernels (cached token features, 12-neighbour gather), one position per step:
  isolates what batching positions saves (it is bounded by the per-position arithmetic both share);
* ``crop_loop``: the published TIC decoder's loop (lumingzzz/TIC ``decompress``): the CAM's full forward on the
  5x5 crop around each position, one position per step. This is the "raster-serial CAM loop" of issue #3.

Each also reports the full image decode (entropy decoding + synthesis) it implies. The latent comes from a
random-initialised model (timing does not depend on training). Results: ``benchmarks/results/cam_decode.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.codec import H, W, benchmark_image, timing_report  # noqa: E402  (the same 768x512 image as the codec benchmark)
from benchmarks.report import RESULTS, write_results  # noqa: E402


def _best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def measure(arch: str, preset: str, repeats: int) -> dict:
    import torch

    from model_store.architectures.registry import create_model, get_preset
    from model_store.codec import canonical_copy, image_to_tensor
    from model_store.entropy.causal_context import (
        crop_serial_decode,
        crop_serial_encode,
        raster_serial_decode,
        raster_serial_encode,
    )
    from model_store.layers.cam import wavefront_step_count

    torch.manual_seed(0)
    qualities = get_preset(arch, preset).qualities
    model = create_model(arch, preset, qualities[len(qualities) // 2]).eval()
    model.update(force=True)
    canon = canonical_copy(model)
    with torch.no_grad():
        y = model.analysis(image_to_tensor(benchmark_image()).unsqueeze(0)).to(torch.float64)
        synth_s, _ = _best(lambda: model.synthesis(y.float()), repeats)
        wave_payload = canon.compress_latent(y)
        wave_s, wave = _best(lambda: canon.decompress_latent(wave_payload), repeats)
        raster_payload = raster_serial_encode(canon, y)
        raster_s, raster = _best(lambda: raster_serial_decode(canon, raster_payload), repeats)
        crop_payload = crop_serial_encode(canon, y)
        crop_s, crop = _best(lambda: crop_serial_decode(canon, crop_payload), 1)  # seconds per run: once is enough
    if not torch.equal(wave, raster):
        raise AssertionError(f"{arch}: the wavefront and raster decoders disagree")
    if not torch.allclose(wave, crop, rtol=0, atol=1e-9):
        raise AssertionError(f"{arch}: the wavefront and crop-loop decoders disagree")
    _, h, w = wave_payload.y_shape
    return {
        "latent": list(wave_payload.y_shape),
        "steps": {"wavefront": wavefront_step_count(h, w), "raster": h * w, "crop_loop": h * w},
        "latent_decode_s": {"wavefront": wave_s, "raster": raster_s, "crop_loop": crop_s},
        "synthesis_s": synth_s,
        "speedup_latent": {"vs_raster": raster_s / wave_s, "vs_crop_loop": crop_s / wave_s},
        "speedup_image": {
            "vs_raster": (raster_s + synth_s) / (wave_s + synth_s),
            "vs_crop_loop": (crop_s + synth_s) / (wave_s + synth_s),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="*", default=["tic", "tic_plus", "erstc"])
    p.add_argument("--preset", default="small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "cam_decode"))
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    results = {}
    for arch in args.archs:
        results[f"{arch}-{args.preset}"] = r = measure(arch, args.preset, args.repeats)
        print(arch, json.dumps(r), flush=True)
    report = timing_report(args.threads, args.repeats, results)
    lines = [
        f"# CAM context decoding, {W}x{H} image, {args.threads} threads (float64 coding path, random init)",
        "",
        "Latent decode seconds (z, CAM context, entropy parameters and rANS; synthesis excluded) and the speed-up",
        "of the shipped wavefront. `crop loop` is the published TIC decoder's schedule (full CAM forward on the",
        "5x5 crop around each position); `raster` uses our per-position kernels one position per step.",
        "",
        "| model | latent | steps (wavefront / serial) | wavefront s | raster s | crop loop s | "
        "latent speed-up vs raster / crop loop | image decode speed-up vs raster / crop loop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t, s, si = r["latent_decode_s"], r["speedup_latent"], r["speedup_image"]
        lines.append(
            f"| {name} | {'x'.join(map(str, r['latent']))} | {r['steps']['wavefront']} / {r['steps']['raster']} | "
            f"{t['wavefront']:.3f} | {t['raster']:.3f} | {t['crop_loop']:.3f} | "
            f"{s['vs_raster']:.1f}x / {s['vs_crop_loop']:.1f}x | {si['vs_raster']:.1f}x / {si['vs_crop_loop']:.1f}x |"
        )
    write_results(Path(args.out), report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
