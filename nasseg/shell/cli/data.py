"""``nasseg data check``: every problem of a dataset, with its file name."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_data_parser(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="inspect datasets (data check)",
                                 description="Dataset tools.")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check", help="read every image and label of a dataset and list all problems",
        description="Read every item of each split and list every problem (missing, unmatched or "
                    "unreadable files, label/image size mismatches, label values outside the "
                    "classes), then pixels per class and the image size range. Exit status 0: "
                    "clean, 1: problems found.",
        epilog="Datasets: cityscapes:PATH, voc:PATH, ade20k:PATH, camvid:PATH, camvid_demo, "
               "folder:PATH, list:PATH. Example: nasseg data check camvid:data/camvid --split val")
    check.add_argument("dataset", metavar="DATASET[:PATH]", help="e.g. cityscapes:/data/cityscapes")
    check.add_argument("--split", action="append", default=None, metavar="SPLIT",
                       help="check only this split (repeatable; default: every split on disk)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(run=cmd_data_check)


def cmd_data_check(args: argparse.Namespace) -> int:
    from nasseg.data.check import check_dataset, format_check

    report = check_dataset(args.dataset, args.split, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_check(report))
    return 1 if report.problems else 0
