"""Encode/decode time and peak memory of every architecture preset on a 768x512 image, next to CompressAI's
``mbt2018-mean`` and ``cheng2020-attn`` (quality 3, random init: timing does not depend on training) measured in
the same run on the same machine.

    python benchmarks/codec.py [--presets small tiny] [--archs stf tic ...] [--repeats 3] [--threads 2]
    python benchmarks/codec.py --device cuda --batch 8 --out benchmarks/results/codec_cuda
    python benchmarks/codec.py --from-log DEVICE.log --device cuda --batch 8 --out ...   # table from a run's log

Each codec runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Results go to
``benchmarks/results/codec.json`` and ``benchmarks/results/codec.md`` with ratios against mbt2018-mean.
On CUDA the network passes run on the GPU (rANS coding stays on the CPU, as in the service), the peak GPU memory
is reported too, and ``--batch N`` adds the throughput of N images coded together (what the service's batching
queue does under load), in images per second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "compressai:mbt2018-mean"
sys.path.insert(0, str(ROOT))
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402

H, W = 512, 768


def benchmark_image():

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import natural_image

    return natural_image(H, W, seed=0)


def timing_report(threads: int, repeats: int, results: dict) -> dict:
    """The JSON document of a timing benchmark on :func:`benchmark_image`."""
    image = f"{W}x{H} synthetic natural-like image (tests/conftest.natural_image)"
    return {"image": image, "threads": threads, "repeats": repeats, "machine": machine(), "results": results}


def timed(fn, device: str) -> float:
    import torch

    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure_ours(arch: str, preset: str, quality: int, repeats: int, device: str = "cpu", batch: int = 1) -> dict:
    import torch

    from model_store.architectures.base import count_parameters
    from model_store.architectures.registry import create_model
    from model_store.codec import ImageCodec, ModelIdentity

    torch.manual_seed(0)
    model = create_model(arch, preset, quality)
    model.update(force=True)
    codec = ImageCodec(model, ModelIdentity(f"{arch}-{preset}", quality, bytes(32)), device=device)
    img = benchmark_image()
    stream = codec.compress(img)  # warm-up: CUDA context, cuDNN algorithm choice, allocator
    enc = [timed(lambda: codec.compress(img), device) for _ in range(repeats)]
    dec = [timed(lambda: codec.decompress(stream), device) for _ in range(repeats)]
    result = {"params": count_parameters(model), "enc_s": min(enc), "dec_s": min(dec), "bytes": len(stream)}
    if batch > 1:
        images = [benchmark_image()] * batch
        streams = codec.compress_batch(images)
        enc_b = min(timed(lambda: codec.compress_batch(images), device) for _ in range(repeats))
        dec_b = min(timed(lambda: codec.decompress_batch(streams), device) for _ in range(repeats))
        result.update(batch=batch, batch_enc_img_s=batch / enc_b, batch_dec_img_s=batch / dec_b)
    return result


def measure_compressai(name: str, quality: int, repeats: int, device: str = "cpu") -> dict:
    import torch
    from compressai.zoo import image_models

    torch.manual_seed(0)
    net = image_models[name](quality=quality, pretrained=False).eval()
    net.update(force=True)
    net = net.to(device)
    img = benchmark_image()
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
    with torch.no_grad():
        out = net.compress(x)  # warm-up
        enc = [timed(lambda: net.compress(x), device) for _ in range(repeats)]
        dec = [timed(lambda: net.decompress(out["strings"], out["shape"]), device) for _ in range(repeats)]
    params = sum(p.numel() for p in net.parameters())
    return {"params": params, "enc_s": min(enc), "dec_s": min(dec), "bytes": sum(len(s[0]) for s in out["strings"])}


def child(spec: str, quality: int, repeats: int, threads: int, device: str = "cpu", batch: int = 1) -> None:
    """Run one measurement and print it as JSON (called in a fresh process)."""
    import resource
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    if spec.startswith("compressai:"):
        result = measure_compressai(spec.split(":", 1)[1], quality, repeats, device)
    else:
        arch, preset = spec.split("-", 1)
        result = measure_ours(arch, preset, quality, repeats, device, batch)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def run_child(spec: str, quality: int, repeats: int, threads: int, timeout: int, device: str, batch: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        spec,
        "--quality",
        str(quality),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
        "--device",
        device,
        "--batch",
        str(batch),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--archs", nargs="*", default=None)
    p.add_argument("--presets", nargs="*", default=["small"])
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=1, help="also measure N images coded together (images/s)")
    p.add_argument("--out", default=str(RESULTS / "codec"))
    p.add_argument(
        "--references",
        nargs="*",
        default=[REFERENCE, "compressai:cheng2020-attn"],
        help="CompressAI models measured alongside (cheng2020-attn's serial context is slow on any device)",
    )
    p.add_argument("--from-log", default=None,
                   help="rebuild the report from the 'SPEC {result}' lines a run printed (e.g. a device call's log; "
                        "the last block of such lines counts)")  # fmt: skip
    args = p.parse_args()
    if args.from_log:
        write_report(results_from_log(Path(args.from_log).read_text()), args)
        return
    if args.child:
        child(args.child, args.quality, args.repeats, args.threads, args.device, args.batch)
        return

    from model_store.architectures.registry import presets

    specs = list(dict.fromkeys([REFERENCE] + args.references))
    for preset in presets():
        if preset.name in args.presets and (args.archs is None or preset.arch in args.archs):
            specs.append(preset.key)
    results: dict = {}
    for spec in specs:
        quality = args.quality
        if not spec.startswith("compressai:"):
            from model_store.architectures.registry import get_preset

            arch, name = spec.split("-", 1)
            qualities = get_preset(arch, name).qualities
            quality = quality if quality in qualities else qualities[len(qualities) // 2]
        results[spec] = run_child(spec, quality, args.repeats, args.threads, args.timeout, args.device, args.batch)
        results[spec]["quality"] = quality
        print(spec, results[spec], flush=True)
        write_report(results, args)  # after every codec: a run cut short (a device call's limit) keeps what it measured
    print("\n".join(markdown_table(results, args)))


def results_from_log(text: str) -> dict:
    """``{spec: result}`` from the lines ``SPEC {...}`` that :func:`main` prints; a spec printed twice keeps the
    later line, and a new block starts when the reference appears again (one run's numbers, never mixed)."""
    import ast
    import re

    results: dict = {}
    for line in text.splitlines():
        m = re.match(r"^(compressai:\S+|\w+-\w+) (\{.*\})$", line.strip())
        if m:
            if m.group(1) == REFERENCE:
                results = {}
            results[m.group(1)] = ast.literal_eval(m.group(2))
    return results


def write_report(results: dict, args) -> None:
    ref = results.get(REFERENCE, {"error": "not measured"})
    for r in results.values():
        if "error" not in r and "error" not in ref:
            r["enc_vs_mbt2018_mean"] = r["enc_s"] / ref["enc_s"]
            r["dec_vs_mbt2018_mean"] = r["dec_s"] / ref["dec_s"]
    report = timing_report(args.threads, args.repeats, results)
    report["device"] = args.device
    write_results(Path(args.out), report, "\n".join(markdown_table(results, args)))


def markdown_table(results: dict, args) -> list:
    on_gpu, batched = args.device == "cuda", args.batch > 1
    extra = ["peak GPU MiB"] if on_gpu else []
    if batched:
        extra += [f"enc img/s @{args.batch}", f"dec img/s @{args.batch}"]
    head = ["codec", "params (M)", "encode s", "decode s", "enc / mbt2018-mean", "dec / mbt2018-mean", "peak RSS MiB"]
    lines = [
        f"# Codec speed, {W}x{H}, {args.device}, {args.threads} CPU threads, best of {args.repeats} (random init)",
        "",
        "| " + " | ".join(head + extra) + " |",
        "|" + "---|" * (len(head) + len(extra)),
    ]
    for spec, r in results.items():
        if "error" in r:
            lines.append(f"| {spec} | error: {r['error']} |" + " |" * (len(head) + len(extra) - 2))
            continue
        cells = [spec, f"{r['params'] / 1e6:.2f}", f"{r['enc_s']:.3f}", f"{r['dec_s']:.3f}",
                 f"{r.get('enc_vs_mbt2018_mean', float('nan')):.2f}",
                 f"{r.get('dec_vs_mbt2018_mean', float('nan')):.2f}",
                 f"{r['peak_rss_mib']:.0f}"]  # fmt: skip
        if on_gpu:
            cells.append(f"{r.get('peak_gpu_mib', float('nan')):.0f}")
        if batched:
            cells += [f"{r['batch_enc_img_s']:.1f}", f"{r['batch_dec_img_s']:.1f}"] if "batch" in r else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
