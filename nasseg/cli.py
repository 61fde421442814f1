"""The ``nasseg`` command line.

Every sub-command lives in a small ``cmd_*`` function; bad input raises NassegError, which
:func:`main` prints as one line (``nasseg: error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import NassegError

EPILOG = "Docs: docs/quickstart.md. Every command takes --help."


def parse_size(text: str) -> tuple[int, int]:
    """'321x321' -> (321, 321); one number means a square."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 321x321, got {text!r}") from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW such as 321x321, got {text!r}")
    return sizes[0], sizes[1]


# --- nasseg info -----------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    from .info import describe_target

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


# --- nasseg search / decode -------------------------------------------------------------------

def cmd_decode(args: argparse.Namespace) -> int:
    from .search import decode_run

    arch = decode_run(args.run_dir, args.epoch)
    if args.output:
        arch.save(args.output)
        print(f"wrote {args.output}")
    else:
        print(arch.to_yaml(), end="")
    return 0


# --- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nasseg",
        description="Neural architecture search for semantic segmentation: search spaces in YAML, "
                    "DARTS / Auto-DeepLab searches with Hessian early stopping, decoding, retraining.",
        epilog=EPILOG)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"nasseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info = sub.add_parser(
        "info", help="parameters and multiply-adds of a search space, an architecture or a model",
        description="Print weight parameters, architecture parameters (alphas, betas) and multiply-adds "
                    "of one forward pass. TARGET is a search-space YAML (or a built-in space name such "
                    "as darts, darts_cifar, autodeeplab), an ArchSpec YAML, or a model name.",
        epilog="Examples: nasseg info autodeeplab --input 321x321 --classes 19 --json; "
               "nasseg info icnet_resnet50 --input 512x1024 --latency")
    info.add_argument("target", metavar="TARGET", help="SPACE.yaml | ARCH.yaml | MODEL_NAME | built-in space")
    info.add_argument("--input", type=parse_size, default=None, metavar="HxW",
                      help="input size (default: 32x32 for classification spaces, 512x512 otherwise)")
    info.add_argument("--classes", type=int, default=None, metavar="N",
                      help="number of classes (default: the space's network.classes)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--latency", action="store_true",
                      help="also measure the median CPU/GPU latency of one forward pass on this machine")
    info.set_defaults(run=cmd_info)

    search = sub.add_parser(
        "search", help="run a search job (DARTS 1st/2nd order or Auto-DeepLab) with Hessian early stopping",
        description="Run every seed of a search job file as a Ray Tune trial (embedded local Ray unless "
                    "--address / RAY_ADDRESS names a cluster; --no-ray runs the seeds one after another in "
                    "this process). Each seed writes OUT/<job name>/seed<N>/: metrics.csv, per-epoch "
                    "alphas/betas and decoded architectures, checkpoints, arch.yaml (the answer) and "
                    "result.json. A job with `kind: hpo` runs an Optuna study of searches instead.",
        epilog="Example: nasseg search jobs/demo.yaml --set epochs=3 --set data.crop=[64,64]")
    search.add_argument("job", metavar="JOB.yaml", help="the search job file (see jobs/)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key, e.g. --set weights.lr=0.01 (repeatable; value is YAML)")
    search.add_argument("--resume", action="store_true",
                        help="continue the job's experiment: unfinished and failed trials from their last "
                             "epoch (settings given by --set apply)")
    search.add_argument("--restart", action="store_true",
                        help="discard an existing run directory of the same job and seed, start over")
    search.add_argument("--out", default="runs", metavar="DIR", help="where runs are written (default: runs)")
    search.add_argument("--seed", type=int, default=None, help="run only this seed")
    search.add_argument("--quiet", action="store_true", help="no progress bars")
    from .runner.cli import add_search_ray_arguments, run_search_command
    add_search_ray_arguments(search)
    search.set_defaults(run=run_search_command)

    dec = sub.add_parser(
        "decode", help="write the discrete architecture (ArchSpec) of a search run",
        description="Decode a search run: by default its answer (arch.yaml: the stop rule's epoch, else "
                    "the last), or the architecture after --epoch N.")
    dec.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (OUT/<job>/seed<N>)")
    dec.add_argument("--epoch", type=int, default=None, help="decode the alphas/betas after this epoch")
    dec.add_argument("-o", "--output", default=None, metavar="ARCH.yaml", help="write here instead of stdout")
    dec.set_defaults(run=cmd_decode)

    from .demo import add_demo_parser
    add_demo_parser(sub)
    from .train.cli import add_train_parser
    add_train_parser(sub, parse_size)
    from .data.check import add_data_parser
    add_data_parser(sub)
    from .viz.draw import add_show_parser
    add_show_parser(sub)
    from .viz.report import add_report_parser
    add_report_parser(sub)
    from .train.evaluate import add_evaluate_parser
    add_evaluate_parser(sub)
    from .train.predict import add_predict_parser
    add_predict_parser(sub)
    from .train.export import add_export_parser
    add_export_parser(sub)
    from .runner.cli import add_results_parser
    add_results_parser(sub)
    from .runner.cluster_cli import add_cluster_parsers
    add_cluster_parsers(sub)
    from .bench import add_bench_parser
    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except NassegError as exc:
        print(f"nasseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nasseg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nasseg info ... | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
