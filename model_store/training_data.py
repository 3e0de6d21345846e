"""Torch datasets over the built photo set (``python -m model_store.data build``).

The pool is small (about 60 training photos), so the training dataset squeezes it with augmentation that keeps
photo statistics intact: random downscale 1x-4x (LANCZOS, log-uniform, so every scale octave is equally
likely, as photo statistics are roughly scale invariant), random crop, flips, 90 degree rotations and a mild
brightness / saturation jitter. Each photo then yields thousands of distinct crops. Photos are drawn with
probability proportional to sqrt(area) by default (see :data:`IMAGE_WEIGHTINGS`).

Every sample is a pure function of ``(seed, index)``: a resumed or multi-worker run sees exactly the crops an
uninterrupted single-process run would, whatever the worker count or order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model_store.data import NO_TRAIN_MARKER

PathLike = Union[str, Path]
#: ITU-R BT.601 luma weights, the usual choice for a saturation jitter.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
IMAGE_GLOBS = ("*.png", "*.jpg", "*.jpeg")
#: How often each photo is drawn. "sqrt_area" balances scene diversity (every photo is one scene: "uniform")
#: against crop diversity (a 1024 px photo holds ~8x the crop positions of a 341 px one: "area"), so the few
#: large clean wallpapers do not drown the many small samples (faces, text, aerials), nor the reverse.
IMAGE_WEIGHTINGS = ("uniform", "sqrt_area", "area")


@dataclass(frozen=True)
class Augmentation:
    """Random-crop parameters. Defaults: 256 px crops, 1x-4x downscale, +-5% brightness, +-10% saturation.

    The jitter is kept mild on purpose: a codec should learn the colour statistics of photos, and a large
    jitter would push them off the natural distribution.
    """

    crop: int = 256
    scales: Tuple[float, float] = (1.0, 4.0)
    brightness: float = 0.05
    saturation: float = 0.10
    flips: bool = True
    rotations: bool = True
    weighting: str = "sqrt_area"


def list_images(root: PathLike) -> List[Path]:
    """Image files directly in ``root``, sorted by name so the index -> image map is stable."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; build it with `python -m model_store.data build`")
    files = sorted({p for g in IMAGE_GLOBS for p in root.glob(g)})
    if not files:
        raise FileNotFoundError(f"no images in {root}")
    return files


def load_rgb_image(path: Path) -> Image.Image:
    """Fully decoded RGB copy (the file handle is closed; pickles cleanly into DataLoader workers)."""
    with Image.open(path) as im:
        return im.convert("RGB")


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """HWC uint8 or float [0,1] array -> CHW float32 tensor in [0, 1]."""
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))


def image_weight(size: Tuple[int, int], weighting: str) -> float:
    """Sampling weight of one photo of ``size`` under a weighting of :data:`IMAGE_WEIGHTINGS`."""
    area = float(size[0] * size[1])
    return {"uniform": 1.0, "sqrt_area": math.sqrt(area), "area": area}[weighting]


class RandomCropDataset(Dataset):
    """Random augmented crops of the training photos, held in memory.

    ``length`` is the number of samples the dataset reports (e.g. steps x batch size); index ``i`` always gives
    the same crop for the same ``seed``. Refuses folders marked not-for-training (validation, RESERVED).
    """

    def __init__(
        self,
        root: PathLike,
        crop: int = 256,
        scales: Sequence[float] = (1.0, 4.0),
        length: int = 100_000,
        seed: int = 0,
        brightness: float = Augmentation.brightness,
        saturation: float = Augmentation.saturation,
        flips: bool = True,
        rotations: bool = True,
        weighting: str = Augmentation.weighting,
    ) -> None:
        root = Path(root)
        if (root / NO_TRAIN_MARKER).exists():
            raise ValueError(f"{root} is marked {NO_TRAIN_MARKER}: it must never be trained on")
        lo, hi = float(scales[0]), float(scales[1])
        if not 1.0 <= lo <= hi:
            raise ValueError(f"scales must satisfy 1 <= min <= max, got {scales}")
        if weighting not in IMAGE_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {IMAGE_WEIGHTINGS}, got {weighting!r}")
        self.aug = Augmentation(crop, (lo, hi), brightness, saturation, flips, rotations, weighting)
        self.length = int(length)
        self.seed = int(seed)
        self.paths = list_images(root)
        self.images = [load_rgb_image(p) for p in self.paths]
        small = [p.name for p, im in zip(self.paths, self.images, strict=True) if min(im.size) < crop]
        if small:
            raise ValueError(f"images smaller than the {crop} px crop in {root}: {small}")
        self.cumulative_weights = np.cumsum([image_weight(im.size, weighting) for im in self.images])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        return to_tensor(self.sample(rng))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One augmented crop as HWC float32 in [0, 1]. All random numbers are drawn up front, in a fixed order,
        so toggling one augmentation does not shift the others."""
        a = self.aug
        u_image, u_scale, u_x, u_y, u_flip, u_rot, u_bright, u_sat = rng.random(8)
        pick = np.searchsorted(self.cumulative_weights, u_image * self.cumulative_weights[-1], side="right")
        img = self.images[min(int(pick), len(self.images) - 1)]
        w, h = img.size
        # log-uniform scale, capped so the scaled crop window still fits inside the image
        max_scale = min(a.scales[1], min(w, h) / a.crop)
        lo = min(a.scales[0], max_scale)
        scale = math.exp(math.log(lo) + u_scale * (math.log(max_scale) - math.log(lo)))
        window = min(min(w, h), max(a.crop, round(a.crop * scale)))
        x0 = int(u_x * (w - window + 1))
        y0 = int(u_y * (h - window + 1))
        box = (x0, y0, x0 + window, y0 + window)
        patch = img.resize((a.crop, a.crop), Image.Resampling.LANCZOS, box=box)
        arr = np.asarray(patch, dtype=np.float32) / 255.0
        if a.flips and u_flip < 0.5:
            arr = arr[:, ::-1]
        if a.rotations:
            arr = np.rot90(arr, k=int(u_rot * 4))
        return self._jitter(arr, u_bright, u_sat)

    def _jitter(self, arr: np.ndarray, u_bright: float, u_sat: float) -> np.ndarray:
        """Brightness gain and saturation blend around luma, both within +-(configured fraction)."""
        a = self.aug
        gain = 1.0 + a.brightness * (2.0 * u_bright - 1.0)
        sat = 1.0 + a.saturation * (2.0 * u_sat - 1.0)
        arr = arr * np.float32(gain)
        luma = (arr @ LUMA)[..., None]
        arr = luma + np.float32(sat) * (arr - luma)
        return np.clip(arr, 0.0, 1.0)


class ImageFolderDataset(Dataset):
    """Full images of a folder (validation / evaluation), as CHW float tensors in [0, 1], sorted by name.

    Images keep their own size (landscape and portrait differ), so batch them one at a time.
    """

    def __init__(self, root: PathLike) -> None:
        self.paths = list_images(root)
        self.images = [np.asarray(load_rgb_image(p)) for p in self.paths]

    @property
    def names(self) -> List[str]:
        """File stems, for per-image reports."""
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_tensor(self.images[index])
