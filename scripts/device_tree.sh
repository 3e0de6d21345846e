#!/usr/bin/env bash
# Make the working tree small enough for the device tool, and put it back.
#
# The device tool sends every tracked file (and untracked files git does not ignore) and refuses trees over
# 64 MiB. The shipped weights alone are larger than that, and a training run on the device does not need them
# (carry the one file a fine-tune starts from, e.g. carry ["model_store/weights/wacnn-small/v2/q3.safetensors"]).
#
#   scripts/device_tree.sh slim      # weights leave the index and are ignored: files stay on disk, nothing travels
#   scripts/device_tree.sh restore   # index and ignore list exactly as before
#   scripts/device_tree.sh status    # what the device would be sent, in MiB
#
# While slim, git sees the weights as deleted-from-index: never commit in that state (restore first); `slim`
# refuses to start when other changes are staged, so restore cannot mix with anything else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WEIGHTS=model_store/weights
LINE="/$WEIGHTS/"
EXCLUDE="$(git rev-parse --git-path info/exclude)"

travelling_mib() {
    { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null \
        | awk '$2 == "total" {s += $1} END {printf "%.1f\n", s / 1048576}'
}

case "${1:-}" in
    slim)
        if ! git diff --cached --quiet; then
            echo "error: changes are staged; commit or unstage them first" >&2
            exit 1
        fi
        mkdir -p "$(dirname "$EXCLUDE")"
        grep -qxF "$LINE" "$EXCLUDE" 2>/dev/null || echo "$LINE" >> "$EXCLUDE"
        git rm -r -q --cached "$WEIGHTS"
        echo "slim: $(travelling_mib) MiB would travel (run '$0 restore' before committing)"
        ;;
    restore)
        git reset -q -- "$WEIGHTS"
        if [[ -f "$EXCLUDE" ]]; then
            grep -vxF "$LINE" "$EXCLUDE" > "$EXCLUDE.tmp" || true
            mv "$EXCLUDE.tmp" "$EXCLUDE"
        fi
        echo "restored: $(travelling_mib) MiB tracked or untracked"
        ;;
    status)
        echo "$(travelling_mib) MiB would travel"
        ;;
    *)
        echo "usage: $0 slim|restore|status" >&2
        exit 2
        ;;
esac
