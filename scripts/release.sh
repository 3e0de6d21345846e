#!/usr/bin/env bash
# Release weights versions end to end, the same way every time:
#   export (fp16 + CDF tables) into a scratch copy of model_store/weights -> check each new quality ladder rises
#   on the test photo (scripts/ladder_check.py) -> evaluate every shipped model and the classical codecs on the
#   validation set with real bitstreams -> the same ladder check there -> install the new version folder(s) ->
#   manifest notes + model card with the measured RD points -> golden streams for each new file -> ranking.
#
#   NOTES="what changed and how it was trained" scripts/release.sh ARCH PRESET VERSION Q=CHECKPOINT|Q=@vK ...
#   e.g. NOTES="q5/q7 fine-tuned from q6/q8" scripts/release.sh tic small v2 1=@v1 3=@v1 5=runs/a/best.pt ...
#   Several releases, one evaluation (it is the slow part): separate them with a lone "+", each with its own
#   lineage as "--notes TEXT" after its version (NOTES is the default for a release without one):
#   scripts/release.sh stf small v2 --notes "..." 3=@v1 6=runs/b/best.pt + zigzag small v1 --notes "..." 3=runs/c/best.pt
#
# Nothing under model_store/ or benchmarks/results/ changes until the evaluation has finished and passed the
# ladder check, so an interrupted or refused release leaves the repo as it was. What stays manual: the README
# "Models" row and model_store/weights/HISTORY.md's entry (numbers printed at the end), the default model
# (model_store/weights/default.json) and, after the commit, retiring the files the new versions supersede (listed
# at the end; model_store/retirement.py).
# Env: PY (python, default .venv/bin/python), THREADS (torch threads for the evaluation, default 1),
#      VAL (validation folder, default data/val), WEIGHTS (default model_store/weights),
#      RESULTS (default benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
VAL=${VAL:-data/val}
WEIGHTS=${WEIGHTS:-model_store/weights}
RESULTS=${RESULTS:-benchmarks/results}
export LIC_WEIGHTS_ROOT=$WEIGHTS  # golden_stream.py and verify_weights.py read it

# Split the arguments into releases at each lone "+": ALL[STARTS[i]] .. ALL[STARTS[i] + LENGTHS[i] - 1].
ALL=("$@" +)
STARTS=() LENGTHS=()
start=0
for i in "${!ALL[@]}"; do
    if [ "${ALL[$i]}" = "+" ]; then
        STARTS+=("$start") LENGTHS+=($((i - start)))
        start=$((i + 1))
    fi
done

# One release's fields: ARCH PRESET VERSION MODEL DEST RNOTES and SPECS (its Q=... arguments).
parse() {
    if [ $# -lt 4 ]; then
        echo "release: each release needs ARCH PRESET VERSION Q=CHECKPOINT|Q=@vK..., got: $*" >&2
        exit 2
    fi
    ARCH=$1 PRESET=$2 VERSION=$3
    shift 3
    RNOTES=${NOTES:-}
    if [ "$1" = "--notes" ]; then
        RNOTES=${2:-}
        shift 2
    fi
    SPECS=("$@")
    MODEL="${ARCH}-${PRESET}"
    DEST="${WEIGHTS}/${MODEL}/${VERSION}"
}

for r in "${!STARTS[@]}"; do  # refuse before any work
    parse "${ALL[@]:${STARTS[$r]}:${LENGTHS[$r]}}"
    if [ -e "$DEST" ]; then
        echo "release: $DEST exists; shipped versions are never overwritten (streams name their weights)" >&2
        exit 1
    fi
    if [ -z "$RNOTES" ]; then
        echo "release: give $MODEL $VERSION its lineage (NOTES, or --notes after the version): it goes into the" \
            "manifest and the model card" >&2
        exit 2
    fi
    if [ ${#SPECS[@]} -eq 0 ]; then
        echo "release: $MODEL $VERSION names no Q=CHECKPOINT|Q=@vK" >&2
        exit 2
    fi
done

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cp -r "$WEIGHTS" "$SCRATCH/weights"

for r in "${!STARTS[@]}"; do
    parse "${ALL[@]:${STARTS[$r]}:${LENGTHS[$r]}}"
    echo "== export $MODEL $VERSION: ${SPECS[*]}"
    $PY -m model_store.train export --arch "$ARCH" --preset "$PRESET" --version "$VERSION" \
        --root "$SCRATCH/weights" "${SPECS[@]}"
    NOTES="$RNOTES" $PY - "$SCRATCH/weights/${MODEL}/${VERSION}/manifest.json" <<'PYEOF'
import json, os, sys
path = sys.argv[1]
manifest = json.load(open(path))
manifest["notes"] = os.environ["NOTES"]
with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
PYEOF
done

# The quality ladder on the test photo first (seconds): the rule tests/test_shipped_models.py applies, so a release
# that would fail it stops before the long evaluation, not after it.
mkdir -p "$SCRATCH/photo"
cp tests/assets/val_citrus_384x256.png "$SCRATCH/photo/"
for r in "${!STARTS[@]}"; do
    parse "${ALL[@]:${STARTS[$r]}:${LENGTHS[$r]}}"
    OMP_NUM_THREADS=$THREADS $PY -m model_store.eval "$SCRATCH/photo" --model "$MODEL" --no-classical --no-ms-ssim \
        --no-reference --weights-root "$SCRATCH/weights" --json "$SCRATCH/photo-$MODEL.json" --quiet > /dev/null
    $PY scripts/ladder_check.py "$SCRATCH/photo-$MODEL.json" "$MODEL"
done

echo "== evaluate every shipped model + classical codecs on $VAL ($THREADS thread(s))"
mkdir -p "$SCRATCH/results"
OMP_NUM_THREADS=$THREADS $PY -m model_store.eval "$VAL" --weights-root "$SCRATCH/weights" \
    --json "$SCRATCH/results/eval_val.json" --csv "$SCRATCH/results/eval_val.csv" \
    --plot "$SCRATCH/results/rd_val.png" --quiet
for r in "${!STARTS[@]}"; do  # the validation-set rule of the same test, before anything is installed
    parse "${ALL[@]:${STARTS[$r]}:${LENGTHS[$r]}}"
    $PY scripts/ladder_check.py "$SCRATCH/results/eval_val.json" "$MODEL" --min-gain-db 0.05
done
cp "$SCRATCH/results/eval_val.json" "$SCRATCH/results/eval_val.csv" "$SCRATCH/results/rd_val.png" "$RESULTS/"

for r in "${!STARTS[@]}"; do
    parse "${ALL[@]:${STARTS[$r]}:${LENGTHS[$r]}}"
    echo "== install $DEST"
    mkdir -p "$(dirname "$DEST")"
    cp -r "$SCRATCH/weights/${MODEL}/${VERSION}" "$DEST"
    $PY -m model_store.model_card "$DEST" --eval "$RESULTS/eval_val.json"
    GOLDEN_DONE=" "
    for spec in "${SPECS[@]}"; do
        case "${spec#*=}" in
            @*) ;;  # a kept file already has its golden stream
            *)  # one per new file: a variable-rate model's codes all name one checkpoint (its first spec's code)
                if [[ "$GOLDEN_DONE" != *" ${spec#*=} "* ]]; then
                    $PY scripts/golden_stream.py "$MODEL" "${spec%%=*}"
                    GOLDEN_DONE+="${spec#*=} "
                fi ;;
        esac
    done
done
if [ -f "$RESULTS/ranking.json" ]; then  # costs change with code, not weights: keep the measured ones
    $PY benchmarks/ranking.py --eval "$RESULTS/eval_val.json" --costs-from "$RESULTS/ranking.json" \
        --out "$RESULTS/ranking"
else
    echo "release: no $RESULTS/ranking.json; run benchmarks/ranking.py to measure costs and rank"
fi
$PY scripts/verify_weights.py

for r in "${!STARTS[@]}"; do
    parse "${ALL[@]:${STARTS[$r]}:${LENGTHS[$r]}}"
    echo "== README numbers ($MODEL $VERSION, validation set)"
    $PY - "$RESULTS/eval_val.json" "$MODEL" <<'PYEOF'
import json, sys
report, model = json.load(open(sys.argv[1])), sys.argv[2]
points = report["codecs"][model]["points"]
print("qualities", ", ".join(str(p["quality"]) for p in points))
print("bpp", " / ".join(f"{p['bpp']:.3f}" for p in points))
print("PSNR", " / ".join(f"{p['psnr']:.2f}" for p in points))
print("BD-rate", " / ".join(f"{v:+.1f} % vs {k}" if v is not None else f"n/a vs {k}"
                            for k, v in report["bd_rate"][model].items()))
print("enc/dec s", " / ".join(f"{p['enc_s']:.2f}/{p['dec_s']:.2f}" for p in points))
PYEOF
    grep -F "| $MODEL |" "$RESULTS/ranking.md" || true
    echo "release: $DEST installed"
done
echo "release: now update README 'Models' and model_store/weights/HISTORY.md (and default.json if a release"
echo "         becomes the default) and commit"
if $PY -m model_store.retirement --root "$WEIGHTS" list | grep '^superseded'; then
    echo "release: no newest version serves the files above any more: once the release is committed, retire them"
    echo "         (python -m model_store.retirement retire; git history keeps them, streams naming them get 410)"
fi
