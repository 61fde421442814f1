"""``nasseg info``: parameters and multiply-adds of a space, an architecture or a model
(nasseg.shell.describe), or what is registered (``--list KIND``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nasseg import arch as archs, fastpaths, space as spaces
from nasseg.config import load_yaml
from nasseg.data.registry import DATASETS
from nasseg.errors import NassegError
from nasseg.models import MODELS
from nasseg.space.blocks import HEADS, STEMS

from ..describe import describe_target
from .args import class_count, parse_size


def add_info_parser(sub) -> None:
    info = sub.add_parser(
        "info", help="parameters and multiply-adds of a search space, an architecture or a model",
        description="Print weight parameters, architecture parameters (alphas, betas) and multiply-adds "
                    "of one forward pass. TARGET is a search-space YAML (or a built-in space name such "
                    "as darts, darts_cifar, autodeeplab), an ArchSpec YAML, or a model name.",
        epilog="Examples: nasseg info autodeeplab --input 321x321 --classes 19 --json; "
               "nasseg info icnet_resnet50 --input 512x1024 --latency")
    info.add_argument("target", metavar="TARGET", nargs="?",
                      help="SPACE.yaml | ARCH.yaml | MODEL_NAME | built-in space")
    info.add_argument("--list", choices=LISTABLE, default=None, metavar="KIND",
                      help=f"list what is registered or built in instead: {', '.join(LISTABLE)}")
    info.add_argument("--input", type=parse_size, default=None, metavar="HxW",
                      help="input size (default: 32x32 for classification spaces, 512x512 otherwise)")
    info.add_argument("--classes", type=class_count, default=None, metavar="N",
                      help="number of classes (default: the space's network.classes)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--latency", action="store_true",
                      help="also measure the median CPU/GPU latency of one forward pass on this machine")
    info.set_defaults(run=cmd_info)


LISTABLE = ("ops", "stems", "heads", "models", "datasets", "spaces", "archs", "fastpaths")


def registered(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) of every op, stem, head, model, dataset, built-in space or arch,
    or of the CPU fast paths (on or off here, and why)."""
    if kind == "fastpaths":
        return [(s.name, f"{'on ' if s.enabled else 'off'}  {s.reason}") for s in fastpaths.describe("cpu")]
    if kind in ("spaces", "archs"):
        folder = spaces.BUILTIN_DIR if kind == "spaces" else archs.BUILTIN_DIR
        return [(path.stem, (load_yaml(path).get("description") or "") if kind == "spaces" else "")
                for path in sorted(folder.glob("*.yaml"))]
    return {"ops": spaces.OPS, "stems": STEMS, "heads": HEADS, "models": MODELS, "datasets": DATASETS}[kind].describe()


def cmd_info(args: argparse.Namespace) -> int:
    if args.list:
        entries = registered(args.list)
        if args.json:
            print(json.dumps([{"name": name, "description": doc} for name, doc in entries], indent=2))
        else:
            width = max(len(name) for name, _ in entries)
            print("\n".join(f"{name:<{width}}  {doc}".rstrip() for name, doc in entries))
        return 0
    if args.target is None:
        raise NassegError("nasseg info: expected a TARGET (a space, an architecture or a model) or --list KIND")
    report = describe_target(args.target, input_size=args.input, classes=args.classes,
                             latency=args.latency)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    labels = {"params": "weight parameters", "arch_params": "architecture parameters",
              "macs": "multiply-adds", "latency_ms": "latency (ms, median)"}
    lines = []
    width = max(len(labels.get(k, k)) for k in report)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, int) and key in ("params", "arch_params", "macs"):
            value = f"{value:,}" + (f"  ({value / 1e9:.2f} G)" if key == "macs" else "")
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        lines.append(f"{labels.get(key, key):<{width}}  {value}")
    return "\n".join(lines)
