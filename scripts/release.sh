#!/usr/bin/env bash
# Release a weights version end to end, the same way every time:
#   export (fp16 + CDF tables) into a scratch copy of model_store/weights -> evaluate every shipped model and
#   the classical codecs on the validation set with real bitstreams -> install the new version folder ->
#   manifest notes + model card with the measured RD points -> golden streams for each new file -> ranking.
#
#   NOTES="what changed and how it was trained" scripts/release.sh ARCH PRESET VERSION Q=CHECKPOINT|Q=@vK ...
#   e.g. NOTES="q5/q7 fine-tuned from q6/q8" scripts/release.sh tic small v2 1=@v1 3=@v1 5=runs/a/best.pt ...
#
# Nothing under model_store/ changes until the evaluation has finished, so an interrupted release leaves the
# repo as it was (benchmarks/results/eval_val.* are rewritten by the evaluation). What stays manual: the README
# "Models" rows (printed at the end) and the default model (model_store/weights/default.json).
# Env: PY (python, default .venv/bin/python), THREADS (torch threads for the evaluation, default 1),
#      VAL (validation folder, default data/val), WEIGHTS (default model_store/weights),
#      RESULTS (default benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
ARCH=$1 PRESET=$2 VERSION=$3
shift 3
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
VAL=${VAL:-data/val}
MODEL="${ARCH}-${PRESET}"
WEIGHTS=${WEIGHTS:-model_store/weights}
RESULTS=${RESULTS:-benchmarks/results}
DEST="${WEIGHTS}/${MODEL}/${VERSION}"
export LIC_WEIGHTS_ROOT=$WEIGHTS  # golden_stream.py and verify_weights.py read it
if [ -e "$DEST" ]; then
    echo "release: $DEST exists; shipped versions are never overwritten (streams name their weights)" >&2
    exit 1
fi
if [ -z "${NOTES:-}" ]; then
    echo "release: set NOTES to the release's lineage (it goes into the manifest and the model card)" >&2
    exit 2
fi

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cp -r "$WEIGHTS" "$SCRATCH/weights"

echo "== export $MODEL $VERSION: $*"
$PY -m model_store.train export --arch "$ARCH" --preset "$PRESET" --version "$VERSION" --root "$SCRATCH/weights" "$@"
NOTES="$NOTES" $PY - "$SCRATCH/weights/${MODEL}/${VERSION}/manifest.json" <<'EOF'
import json, os, sys
path = sys.argv[1]
manifest = json.load(open(path))
manifest["notes"] = os.environ["NOTES"]
with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
EOF

echo "== evaluate every shipped model + classical codecs on $VAL ($THREADS thread(s))"
OMP_NUM_THREADS=$THREADS $PY -m model_store.eval "$VAL" --weights-root "$SCRATCH/weights" \
    --json "$RESULTS/eval_val.json" --csv "$RESULTS/eval_val.csv" --plot "$RESULTS/rd_val.png" --quiet

echo "== install $DEST"
mkdir -p "$(dirname "$DEST")"
cp -r "$SCRATCH/weights/${MODEL}/${VERSION}" "$DEST"
$PY -m model_store.model_card "$DEST" --eval "$RESULTS/eval_val.json"
for spec in "$@"; do
    case "${spec#*=}" in
        @*) ;;  # a kept file already has its golden stream
        *) $PY scripts/golden_stream.py "$MODEL" "${spec%%=*}" ;;
    esac
done
if [ -f "$RESULTS/ranking.json" ]; then  # costs change with code, not weights: keep the measured ones
    $PY benchmarks/ranking.py --eval "$RESULTS/eval_val.json" --costs-from "$RESULTS/ranking.json" \
        --out "$RESULTS/ranking"
else
    echo "release: no $RESULTS/ranking.json; run benchmarks/ranking.py to measure costs and rank"
fi
$PY scripts/verify_weights.py

echo "== README numbers ($MODEL $VERSION, validation set)"
$PY - "$RESULTS/eval_val.json" "$MODEL" <<'EOF'
import json, sys
report, model = json.load(open(sys.argv[1])), sys.argv[2]
points = report["codecs"][model]["points"]
print("qualities", ", ".join(str(p["quality"]) for p in points))
print("bpp", " / ".join(f"{p['bpp']:.3f}" for p in points))
print("PSNR", " / ".join(f"{p['psnr']:.2f}" for p in points))
print("BD-rate", " / ".join(f"{v:+.1f} % vs {k}" if v is not None else f"n/a vs {k}"
                            for k, v in report["bd_rate"][model].items()))
print("enc/dec s", " / ".join(f"{p['enc_s']:.2f}/{p['dec_s']:.2f}" for p in points))
EOF
grep -F "| $MODEL |" "$RESULTS/ranking.md" || true
echo "release: $DEST installed; now update README 'Models' (and default.json if this becomes the default) and commit"
