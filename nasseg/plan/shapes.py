"""What a job feeds its network: input sizes, the number of classes, the ignore label.

Read from the job's data keys the way the search and the trainer read them (a training crop, else
the resize, else the stored image size); the data set is opened only when a size is not in the
job, to read one image's header.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.registry import dataset_info, open_source
from ..errors import NassegError

Size = tuple[int, int]


@dataclass(frozen=True)
class DataShapes:
    num_classes: int
    ignore_index: int
    train_size: Size  # the network's input in a training or search step
    val_size: Size  # the network's input in validation
    label_size: Size  # the validation labels' size (the trainer scores at the stored resolution)


def stored_image_size(spec: str, split: str) -> Size:
    """(height, width) of the first image of a split, from its header."""
    from PIL import Image

    pairs = open_source(spec).scan(split).require()
    if not pairs:
        raise NassegError(f"{spec}: the {split} split has no images to size the network's input by")
    try:
        with Image.open(pairs[0][0]) as image:
            width, height = image.size
    except OSError as exc:
        raise NassegError(f"{pairs[0][0]}: cannot read the image ({exc})") from None
    return height, width


def search_shapes(data) -> DataShapes:
    """A search job's ``data``: training crops (else resized or stored images), validation at
    ``data.size`` (else stored)."""
    info = dataset_info(data.spec)
    size = tuple(data.size) if data.size else None
    val = size or stored_image_size(data.spec, "val")
    train = tuple(data.crop) if data.crop else size or stored_image_size(data.spec, "train")
    return DataShapes(info.num_classes, info.ignore_index, train, val, val)


def training_shapes(data) -> DataShapes:
    """A training job's ``data``: random crops for training; validation images at ``data.size``
    (else stored), their labels at the stored size."""
    info = dataset_info(data.spec)
    stored = stored_image_size(data.spec, data.val_split)
    val = tuple(data.size) if data.size else stored
    return DataShapes(info.num_classes, info.ignore_index, tuple(data.crop), val, stored)
