"""Segmentation data: list-file datasets (CamVid, the bundled demo subset) and joint transforms."""

from nasseg.data.datasets import (CAMVID_CLASSES, CAMVID_IGNORE, CAMVID_VOID, DEMO_ROOT,
                                  ListFileDataset, camvid, demo_camvid)
from nasseg.data.transforms import eval_transform, train_transform

__all__ = ["CAMVID_CLASSES", "CAMVID_IGNORE", "CAMVID_VOID", "DEMO_ROOT", "ListFileDataset",
           "camvid", "demo_camvid", "eval_transform", "train_transform"]
