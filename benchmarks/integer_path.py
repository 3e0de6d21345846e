"""What an integer entropy path costs in rate (issue #29), one network at a time, against its float64 self.

    python benchmarks/integer_path.py [--model erstc-small] [--quality 6] [--images data/val] [--limit 6]

Post-training quantisation (model_store/entropy/integer_nets.py) to per-tensor power-of-two weights of ``w`` bits
and activations with ``f`` fractional bits, GELU and exp as tables, LayerNorm and softmax in exact integer form.
Three steps: the entropy-parameter net alone (fed the float path's hyperprior and context), the CAM context model
with it (fed the float path's hyperprior and the rounded latent), and the whole path, h_s included (fed ẑ). On real
latents of the validation photos: the bits the coder would spend (the scale table's entry for each σ, as the rANS
coder picks it) with the integer (σ, μ) against the float64 ones. Results:
``benchmarks/results/integer_path.{json,md}``.
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


def parameters_only(model, frac: int, weight_bits: int):
    """(hyper, context input) -> (σ, μ): the integer parameter net on the float context model's output."""
    import torch

    from model_store.entropy.integer_nets import IntegerParameterNet, to_fixed

    net = IntegerParameterNet.of(model.entropy_parameters, frac, weight_bits)

    def run(hyper, y_hat):
        features = torch.cat([hyper, model.context_prediction(y_hat)], dim=1)
        b, e, h, w = features.shape
        out = net(to_fixed(features, frac).permute(0, 2, 3, 1).reshape(-1, e)) * 0.5**frac
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2).chunk(2, dim=1)

    return run


def context_and_parameters(model, frac: int, weight_bits: int):
    """(hyper, context input) -> (σ, μ): the integer CAM and parameter net."""
    from model_store.entropy.integer_nets import IntegerCAM, IntegerParameterNet, integer_entropy_params

    cam = IntegerCAM.of(model.context_prediction, frac, weight_bits)
    net = IntegerParameterNet.of(model.entropy_parameters, frac, weight_bits)
    return lambda hyper, y_hat: integer_entropy_params(cam, net, hyper, y_hat, frac)


def whole_path(model, frac: int, weight_bits: int):
    """(ẑ, context input) -> (σ, μ): h_s, the CAM and the parameter net, all integer."""
    from model_store.entropy.integer_nets import IntegerHyperSynthesis, to_fixed

    h_s = IntegerHyperSynthesis.of(model.h_s, frac, weight_bits)
    rest = context_and_parameters(model, frac, weight_bits)
    return lambda z_hat, y_hat: rest(h_s(to_fixed(z_hat, frac)) * 0.5**frac, y_hat)


#: name -> (builder, whether it takes ẑ instead of h_s(ẑ))
NETWORKS = {
    "entropy_parameters": (parameters_only, False),
    "cam+entropy_parameters": (context_and_parameters, False),
    "h_s+cam+entropy_parameters": (whole_path, True),
}


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
    nets = {
        (name, f, w): build(model, f, w)
        for name, (build, _) in NETWORKS.items()
        for f in FRACTION_BITS
        for w in WEIGHT_BITS
    }
    totals: Dict[Tuple[str, int, int], List[float]] = {key: [0.0, 0.0] for key in nets}
    paths = image_paths(args.images, args.limit)
    with torch.no_grad():
        for path in paths:
            image = np.ascontiguousarray(open_image(path))
            y = codec.analyse([image]).double()
            z_hat, _ = model.entropy_bottleneck(model.h_a(y))
            hyper, y_hat = model.h_s(z_hat), torch.round(y)
            features = torch.cat([hyper, model.context_prediction(y_hat)], dim=1)
            reference = coded_bits(model, *model.entropy_parameters(features).chunk(2, dim=1), y)
            for key, net in nets.items():
                totals[key][0] += reference
                start = z_hat if NETWORKS[key[0]][1] else hyper
                totals[key][1] += coded_bits(model, *net(start, y_hat), y)
    rows = [
        {"network": n, "fraction_bits": f, "weight_bits": w, "rate_change_percent": 100.0 * (q / r - 1.0)}
        for (n, f, w), (r, q) in totals.items()
    ]
    return {
        "model": args.model,
        "quality": args.quality,
        "images": [Path(p).name for p in paths],
        "machine": machine(),
        "rows": rows,
    }


def markdown(doc: dict) -> str:
    lines = [
        f"# Integer entropy path: rate cost of integer networks ({doc['model']} q{doc['quality']})",
        "",
        f"{len(doc['images'])} validation photos; bits the coder would spend with the integer networks' (σ, μ) over "
        "the float64 networks' (the context model sees the rounded latent in both).",
        "",
        "| integer networks | fractional bits | weight bits | rate change |",
        "|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['network']} | {r['fraction_bits']} | {r['weight_bits']} | {r['rate_change_percent']:+.3f} % |"
        )
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
