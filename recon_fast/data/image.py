"""Image pipeline of ReCon pretraining: BGR uint8 render -> augmented, normalised (3, 224, 224).

Official pipeline (utils/transforms.py): the OpenCV BGR array goes to PIL *without* a channel swap,
then resize to 256x256 (PIL's default filter), random horizontal flip, RandomResizedCrop(224,
scale=(0.64, 1), bicubic), RandAugmentMC(n=2, m=10) with a 16x16 grey cutout, ToTensor and the
ImageNet Normalize. The same transform is used for every split and for both image teachers.

All random draws come from torch's RNG, which DataLoader seeds per worker, so runs are
reproducible under ``torch.manual_seed`` and workers never repeat each other's augmentations.

``mode="center"`` is the deterministic view used for the per-view image-feature cache: resize to
256, centre crop 224, ToTensor, Normalize (no flip, no RandAugment, no cutout).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224
CROP_SCALE = (0.64, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CUTOUT_SIZE = 16
CUTOUT_GREY = (127, 127, 127)
IMAGE_MODES = ("augment", "center")


def _rand() -> float:
    return torch.rand(()).item()


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high)."""
    return int(torch.randint(low, high, ()).item())


def _signed(value: float) -> float:
    """Negate with probability 1/2 (the geometric ops of RandAugment go both ways)."""
    return -value if _rand() < 0.5 else value


# RandAugment ops. `v` is the integer magnitude (1..m-1); each op maps it to its own range.
def _auto_contrast(img, v):
    return PIL.ImageOps.autocontrast(img)


def _enhance(enhancer):
    def op(img, v):
        return enhancer(img).enhance(0.05 + 0.9 * v / 10)  # factor in [0.05, 0.95)
    return op


def _equalize(img, v):
    return PIL.ImageOps.equalize(img)


def _identity(img, v):
    return img


def _posterize(img, v):
    return PIL.ImageOps.posterize(img, 4 + int(v * 4 / 10))


def _rotate(img, v):
    return img.rotate(_signed(int(v * 30 / 10)))


def _shear_x(img, v):
    return img.transform(img.size, PIL.Image.AFFINE, (1, _signed(0.3 * v / 10), 0, 0, 1, 0))


def _shear_y(img, v):
    return img.transform(img.size, PIL.Image.AFFINE, (1, 0, 0, _signed(0.3 * v / 10), 1, 0))


def _solarize(img, v):
    return PIL.ImageOps.solarize(img, 256 - int(v * 256 / 10))


def _translate_x(img, v):
    shift = int(_signed(0.3 * v / 10) * img.size[0])
    return img.transform(img.size, PIL.Image.AFFINE, (1, 0, shift, 0, 1, 0))


def _translate_y(img, v):
    shift = int(_signed(0.3 * v / 10) * img.size[1])
    return img.transform(img.size, PIL.Image.AFFINE, (1, 0, 0, 0, 1, shift))


# The 14-op FixMatch pool, in its published order (the order matters for seeded draws only).
RANDAUGMENT_POOL: tuple[tuple[str, Callable], ...] = (
    ("AutoContrast", _auto_contrast), ("Brightness", _enhance(PIL.ImageEnhance.Brightness)),
    ("Color", _enhance(PIL.ImageEnhance.Color)), ("Contrast", _enhance(PIL.ImageEnhance.Contrast)),
    ("Equalize", _equalize), ("Identity", _identity), ("Posterize", _posterize),
    ("Rotate", _rotate), ("Sharpness", _enhance(PIL.ImageEnhance.Sharpness)),
    ("ShearX", _shear_x), ("ShearY", _shear_y), ("Solarize", _solarize),
    ("TranslateX", _translate_x), ("TranslateY", _translate_y),
)


def cutout(img: PIL.Image.Image, size: int = CUTOUT_SIZE) -> PIL.Image.Image:
    """Paste a grey square of side `size` (clipped at the border) at a uniformly random centre.

    Like FixMatch's CutoutAbs the box corners are (x0, y0, min(w, x0+size), min(h, y0+size)) and
    PIL fills the rectangle including its far edge.
    """
    w, h = img.size
    x0 = int(max(0.0, _rand() * w - size / 2.0))
    y0 = int(max(0.0, _rand() * h - size / 2.0))
    box = (x0, y0, int(min(w, x0 + size)), int(min(h, y0 + size)))
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle(box, CUTOUT_GREY)
    return img


class RandAugmentMC:
    """FixMatch RandAugment: `n` ops drawn with replacement from the 14-op pool; each runs with
    probability 1/2 at a magnitude drawn uniformly from 1..m-1; a grey cutout always follows."""

    def __init__(self, n: int = 2, m: int = 10):
        if not (isinstance(n, int) and n >= 1 and isinstance(m, int) and 1 <= m <= 10):
            raise ValueError(f"RandAugmentMC needs n >= 1 and 1 <= m <= 10, got n={n!r}, m={m!r}")
        self.n, self.m = n, m

    def __call__(self, img: PIL.Image.Image) -> PIL.Image.Image:
        for _ in range(self.n):
            _, op = RANDAUGMENT_POOL[_randint(0, len(RANDAUGMENT_POOL))]
            magnitude = _randint(1, self.m) if self.m > 1 else 1
            if _rand() < 0.5:
                img = op(img, magnitude)
        return cutout(img)


def to_normalized_tensor(img: PIL.Image.Image) -> torch.Tensor:
    """ToTensor + ImageNet Normalize: uint8 (H, W, 3) -> float32 (3, H, W)."""
    array = np.asarray(img, dtype=np.float32) / 255.0
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


class ImageTransform:
    """BGR uint8 (H, W, 3) array -> normalised float32 (3, 224, 224) tensor.

    Args:
        mode: "augment" (the official training transform) or "center" (deterministic view for
            feature caches and evaluation).
    """

    def __init__(self, mode: str = "augment"):
        if mode not in IMAGE_MODES:
            raise ValueError(f"image mode must be one of {IMAGE_MODES}, got {mode!r}")
        self.mode = mode
        self.randaugment = RandAugmentMC(2, 10)

    def __call__(self, bgr: np.ndarray) -> torch.Tensor:
        if not (isinstance(bgr, np.ndarray) and bgr.dtype == np.uint8 and bgr.ndim == 3
                and bgr.shape[2] == 3):
            got = f"{bgr.dtype} {bgr.shape}" if isinstance(bgr, np.ndarray) else type(bgr).__name__
            raise ValueError(f"ImageTransform expects a uint8 (H, W, 3) array, got {got}")
        # The BGR bytes are handed to PIL as if they were RGB, exactly like the official code.
        img = PIL.Image.fromarray(bgr).resize((RESIZE, RESIZE))
        if self.mode == "center":
            return to_normalized_tensor(TF.center_crop(img, [CROP, CROP]))
        if _rand() < 0.5:
            img = img.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        top, left, h, w = RandomResizedCrop.get_params(img, list(CROP_SCALE), list(CROP_RATIO))
        img = TF.resized_crop(img, top, left, h, w, [CROP, CROP],
                              interpolation=InterpolationMode.BICUBIC)
        return to_normalized_tensor(self.randaugment(img))
