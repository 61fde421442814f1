"""Joint image + label transforms for segmentation.

Convention (one for every transform here):

* a sample is ``(image, label)`` of numpy arrays: ``image`` is ``uint8`` HxWx3 RGB, ``label`` is
  ``int64`` HxW holding class ids or the ignore index (already mapped by the dataset);
* every transform is called as ``t(image, label, rng)`` and returns a new ``(image, label)``;
  ``rng`` is a :class:`random.Random` owned by the caller, so one seeded generator decides all
  random draws of a sample and the same draw is applied to image and label alike;
* :class:`Normalize` is the last step: it turns the image into ``float32`` HxWx3
  ``(x / 255 - mean) / std``; the dataset then converts to CxHxW tensors.

Geometry changes use bilinear resampling for images and nearest for labels, so labels never get
invented class ids.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

Sample = tuple[np.ndarray, np.ndarray]
Transform = Callable[[np.ndarray, np.ndarray, random.Random], Sample]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN_U8 = tuple(round(255 * m) for m in IMAGENET_MEAN)  # padding that normalises to ~0
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # RGB -> grey (ITU-R BT.601)


def resize_pair(image: np.ndarray, label: np.ndarray, height: int, width: int) -> Sample:
    """Resize image (bilinear) and label (nearest, pixel-centre aligned) to height x width."""
    pil = Image.fromarray(np.ascontiguousarray(image))
    image = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    h, w = label.shape
    rows = ((np.arange(height) + 0.5) * h / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * w / width).astype(np.int64)
    return image, label[rows[:, None], cols[None, :]]


class Compose:
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label


class Resize:
    def __init__(self, height: int, width: int):
        self.height, self.width = height, width

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        return resize_pair(image, label, self.height, self.width)


class RandomScale:
    """Rescale by a factor drawn uniformly from ``[min_scale, max_scale]`` (multi-scale)."""

    def __init__(self, min_scale: float, max_scale: float):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        s = rng.uniform(self.min_scale, self.max_scale)
        h, w = label.shape
        return resize_pair(image, label, max(1, round(h * s)), max(1, round(w * s)))


class RandomCrop:
    """Crop ``height`` x ``width`` at a random position.

    A sample smaller than the crop is first padded at the bottom/right: labels with
    ``ignore_index`` (padding never counts in the loss), images with ``fill`` (the ImageNet mean
    by default, i.e. zero after normalisation).
    """

    def __init__(self, height: int, width: int, ignore_index: int = 255, fill: tuple[int, int, int] = IMAGENET_MEAN_U8):
        self.height, self.width = height, width
        self.ignore_index, self.fill = ignore_index, fill

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        h, w = label.shape
        ph, pw = max(self.height, h), max(self.width, w)
        if (ph, pw) != (h, w):
            padded = np.full((ph, pw, 3), self.fill, np.uint8)
            padded[:h, :w] = image
            padded_label = np.full((ph, pw), self.ignore_index, label.dtype)
            padded_label[:h, :w] = label
            image, label = padded, padded_label
        top, left = rng.randint(0, ph - self.height), rng.randint(0, pw - self.width)
        box = (slice(top, top + self.height), slice(left, left + self.width))
        return image[box], label[box]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        if rng.random() < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label


class ColorJitter:
    """Random brightness, contrast and saturation (image only), each factor in ``[1-x, 1+x]``.

    Applied in that fixed order; the result is rounded back to ``uint8``.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        def factor(x: float) -> float:
            return rng.uniform(max(0.0, 1 - x), 1 + x)

        img = image.astype(np.float32) * factor(self.brightness)
        c = factor(self.contrast)
        img = c * img + (1 - c) * (img @ LUMA).mean()
        s = factor(self.saturation)
        img = s * img + (1 - s) * (img @ LUMA)[..., None]
        return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


class Normalize:
    """``(image / 255 - mean) / std`` as float32; must be the last transform."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: random.Random) -> Sample:
        return (image.astype(np.float32) / 255 - self.mean) / self.std, label


def train_transform(crop: int | tuple[int, int], scale: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                    color_jitter: float = 0.0, ignore_index: int = 255, size: tuple[int, int] | None = None) -> Compose:
    """Standard segmentation augmentation: (resize to ``size``), random scale, crop, flip, (jitter), normalise."""
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    steps: list[Transform] = [Resize(*size)] if size else []
    steps += [RandomScale(*scale), RandomCrop(ch, cw, ignore_index)]
    if flip:
        steps.append(RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(Normalize())
    return Compose(steps)


def eval_transform(size: tuple[int, int] | None = None) -> Compose:
    """Evaluation preprocessing: optional resize to ``size`` = (height, width), then normalise."""
    steps: list[Transform] = [Resize(*size)] if size else []
    return Compose([*steps, Normalize()])
