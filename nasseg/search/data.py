"""Data for a search: the training split halved into weight (A) and architecture (B) parts.

The halves are a seeded permutation of the training list, so a seed fixes which images train
weights and which train the architecture. Batches come in a seeded order per epoch, and the
augmentation of item i at epoch e is fixed by (seed, e, i): a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..data import eval_transform
from ..data.registry import build_dataset, dataset_info
from ..data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize
from ..errors import SpecError
from .config import DataConfig, SearchConfig


@dataclass
class SearchData:
    train: Dataset  # the full training split (augmented)
    half_a: Subset  # weights
    half_b: Subset  # architecture
    val: Dataset  # the validation split (not augmented): per-epoch loss and mIoU
    num_classes: int
    ignore_index: int

    def loaders(self, batch_size: int, seed: int, epoch: int) -> tuple[DataLoader, DataLoader]:
        """Shuffled loaders over A and B; the order depends only on (seed, epoch)."""
        def loader(subset: Subset, salt: int) -> DataLoader:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch * 2 + salt)
            return DataLoader(subset, batch_size=batch_size, shuffle=True, drop_last=True,
                              generator=generator, num_workers=0)
        return loader(self.half_a, 0), loader(self.half_b, 1)

    def fixed_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` images of half B without augmentation draws changing: the Hessian batch."""
        self.train.set_epoch(0)
        items = [self.half_b[i] for i in range(min(size, len(self.half_b)))]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def build_search_data(config: DataConfig, seed: int) -> SearchData:
    spec = config.spec
    ignore = dataset_info(spec).ignore_index
    steps = [Resize(*config.size)] if config.size else []
    if config.crop:
        steps.append(RandomCrop(*config.crop, ignore_index=ignore))
    if config.flip:
        steps.append(RandomHorizontalFlip())
    train = build_dataset(spec, "train", Compose([*steps, Normalize()]), seed)
    val = build_dataset(spec, "val", eval_transform(config.size), seed)
    count = min(len(train), config.limit or len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    half = count // 2
    return SearchData(train, Subset(train, order[:half]), Subset(train, order[half:2 * half]), val,
                      train.num_classes, train.ignore_index)


def check_search_data(config: SearchConfig, data: SearchData, largest_stride: int) -> None:
    """Values that pass the job's schema but not its data or supernet: a limit above the split,
    batches larger than the halves (drop_last would leave an epoch without a step), the val split
    or half B (the Hessian batch), and a training input smaller than the supernet's largest stride.
    One SpecError naming the job file and key."""
    d, file = config.data, config.file
    total, half = len(data.train), len(data.half_a)
    if d.limit is not None and d.limit > total:
        raise SpecError(file, "data.limit", f"{d.limit} is more than the {total} images of the train split of "
                        f"{d.spec}; expected at most {total} (or no limit)")
    if d.batch_size > half:
        raise SpecError(file, "data.batch_size", f"{d.batch_size} is larger than each half of the {2 * half} training "
                        f"images used (half A trains the weights, half B the architecture: {half} each); expected at "
                        f"most {half}, or more images (data.limit)")
    if d.val_batch_size > len(data.val):
        raise SpecError(file, "data.val_batch_size", f"{d.val_batch_size} is larger than the val split of {d.spec} "
                        f"({len(data.val)} images); expected at most {len(data.val)}")
    hessian = config.hessian.batch_size
    if hessian is not None and hessian > len(data.half_b):
        raise SpecError(file, "hessian.batch_size", f"{hessian} is larger than half B ({len(data.half_b)} images), "
                        f"which the Hessian batch is drawn from; expected at most {len(data.half_b)}")
    for key, size in (("data.crop", d.crop), ("data.size", None if d.crop else d.size)):
        if size and min(size) < largest_stride:
            raise SpecError(file, key, f"{list(size)} is smaller than the supernet's largest stride {largest_stride}; "
                            f"expected at least {largest_stride}x{largest_stride} pixels")
