"""What an integer entropy path costs in rate (issue #29), one network at a time, against its float64 self.

    python benchmarks/integer_path.py [--model erstc-small] [--quality 6] [--images data/val] [--limit 6]

Step one, the entropy-parameter net (1x1 convs and GELU): post-training quantisation to per-tensor power-of-two
weights of ``w`` bits, activations with ``f`` fractional bits, GELU as a table (model_store/entropy/integer.py). On
real latents of the validation photos, the bits the coder would spend (the scale table's entry for each σ, as the
rANS coder picks it) with the integer net's (σ, μ) against the float64 net's, both given the same hyperprior and
context (the float path's, so this isolates the one net). Results: ``benchmarks/results/integer_path.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.effort import image_paths  # noqa: E402
from benchmarks.report import RESULTS, machine, write_results  # noqa: E402

FRACTION_BITS = (6, 8, 10)
WEIGHT_BITS = (8, 12, 16)
#: GELU's table covers [-RANGE, RANGE] (outside: 0 below, the identity above)
GELU_RANGE = 8


def integer_parameter_net(convs, frac: int, weight_bits: int):
    """The parameter net as integer layers: features (float) -> (σ, μ) (float, from the integer result)."""
    import torch
    import torch.nn.functional as F

    from model_store.entropy.integer import IntegerLinear, IntegerTable, quantize_weight

    gelu = IntegerTable.of(F.gelu, -GELU_RANGE << frac, GELU_RANGE << frac, frac, frac, identity_above=True)
    weights = [quantize_weight(conv.weight.flatten(1), weight_bits) for conv in convs]

    def run(features):
        x = torch.round(features.double() * 2.0**frac)
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1).reshape(-1, c)
        for i, (conv, (w_int, shift)) in enumerate(zip(convs, weights)):
            bias = torch.round(conv.bias.double() * 2.0 ** (frac + shift))
            x = IntegerLinear(w_int, bias, shift, input_bound=float(x.abs().max()))(x)
            if i < len(convs) - 1:
                x = gelu(x)
        return (x * 0.5**frac).reshape(b, h, w, -1).permute(0, 3, 1, 2).chunk(2, dim=1)

    return run


def coded_bits(model, scales, means, y) -> float:
    """Bits of ``y`` under the scale-table entries the coder would pick for ``scales``."""
    import torch

    gaussian = model.gaussian_conditional
    table = gaussian.scale_table.double()
    bounded = gaussian.lower_bound_scale(scales.double()).contiguous()
    index = torch.searchsorted(table[:-1].contiguous(), bounded, side="left")
    _, likelihoods = gaussian(y, table[index], means=means.double())
    return float(-torch.log2(likelihoods).sum())


def run(args) -> dict:
    import numpy as np
    import torch

    from model_store.codec import load_codec
    from model_store.image_io import open_image

    torch.set_num_threads(args.threads)
    codec = load_codec(args.model, args.quality)
    model = copy.deepcopy(codec.model).double()  # the entropy path in float64; the codec keeps g_a as shipped
    convs = [layer for layer in model.entropy_parameters if isinstance(layer, torch.nn.Conv2d)]
    nets = {(f, w): integer_parameter_net(convs, f, w) for f in FRACTION_BITS for w in WEIGHT_BITS}
    totals: Dict[Tuple[int, int], List[float]] = {key: [0.0, 0.0] for key in nets}
    paths = image_paths(args.images, args.limit)
    with torch.no_grad():
        for path in paths:
            image = np.ascontiguousarray(open_image(path))
            y = codec.analyse([image]).double()
            z_hat, _ = model.entropy_bottleneck(model.h_a(y))
            features = torch.cat([model.h_s(z_hat), model.context_prediction(torch.round(y))], dim=1)
            reference = coded_bits(model, *model.entropy_parameters(features).chunk(2, dim=1), y)
            for key, net in nets.items():
                totals[key][0] += reference
                totals[key][1] += coded_bits(model, *net(features), y)
    rows = [
        {"fraction_bits": f, "weight_bits": w, "rate_change_percent": 100.0 * (q / r - 1.0)}
        for (f, w), (r, q) in totals.items()
    ]
    return {
        "model": args.model,
        "quality": args.quality,
        "images": [Path(p).name for p in paths],
        "machine": machine(),
        "network": "entropy_parameters",
        "rows": rows,
    }


def markdown(doc: dict) -> str:
    lines = [
        f"# Integer entropy path: rate cost of the integer {doc['network']} ({doc['model']} q{doc['quality']})",
        "",
        f"{len(doc['images'])} validation photos; bits the coder would spend with the integer net's (σ, μ) over the "
        "float64 net's, both fed the float path's hyperprior and context.",
        "",
        "| fractional bits | weight bits | rate change |",
        "|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(f"| {r['fraction_bits']} | {r['weight_bits']} | {r['rate_change_percent']:+.3f} % |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="erstc-small")
    parser.add_argument("--quality", type=int, default=6)
    parser.add_argument("--images", type=Path, default=ROOT / "data/val")
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "integer_path")
    args = parser.parse_args(argv)
    doc = run(args)
    write_results(args.out, doc, markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
