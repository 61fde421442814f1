"""Segmentation data: datasets by name (``build_dataset("camvid:PATH", "train")``), their checks,
and joint image/label transforms."""

from nasseg.data.datasets import (CAMVID_CLASSES, CAMVID_IGNORE, CAMVID_VOID, DEMO_ROOT,
                                  ListFileDataset, PairDataset, camvid, demo_camvid)
from nasseg.data.registry import available_datasets, build_dataset, dataset_info, parse_data_spec
from nasseg.data.transforms import eval_transform, train_transform

__all__ = ["CAMVID_CLASSES", "CAMVID_IGNORE", "CAMVID_VOID", "DEMO_ROOT", "ListFileDataset",
           "PairDataset", "available_datasets", "build_dataset", "camvid", "dataset_info",
           "demo_camvid", "eval_transform", "parse_data_spec", "train_transform"]
