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
from ..data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize
from .config import DataConfig


@dataclass
class SearchData:
    train: Dataset  # the full training split (augmented)
    half_a: Subset  # weights
    half_b: Subset  # architecture
    val: Dataset  # the validation split (not augmented): per-epoch loss and mIoU
    num_classes: int
    ignore_index: int
    class_names: tuple[str, ...]

    def set_epoch(self, epoch: int) -> None:
        self.train.set_epoch(epoch)

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
    from ..data.registry import build_dataset, dataset_info

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
                      train.num_classes, train.ignore_index, train.classes)
