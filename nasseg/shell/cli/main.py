"""The ``nasseg`` command line: one parser per sub-command, each in its own module of this package.

Bad input raises NassegError anywhere below, which :func:`main` prints as one line
(``nasseg: error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from nasseg.errors import NassegError

from ..process import configure_process
from . import bench, cluster, data, demo, inference, info, report, search, show, train

EPILOG = "Docs: docs/quickstart.md. Every command takes --help."


def build_parser() -> argparse.ArgumentParser:
    from nasseg import __version__

    parser = argparse.ArgumentParser(
        prog="nasseg",
        description="Neural architecture search for semantic segmentation: search spaces in YAML, "
                    "DARTS / Auto-DeepLab searches with Hessian early stopping, decoding, retraining.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"nasseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    info.add_info_parser(sub)
    search.add_search_parsers(sub)
    demo.add_demo_parser(sub)
    train.add_train_parser(sub)
    data.add_data_parser(sub)
    show.add_show_parser(sub)
    report.add_report_parser(sub)
    inference.add_evaluate_parser(sub)
    inference.add_predict_parser(sub)
    inference.add_export_parser(sub)
    search.add_results_parser(sub)
    cluster.add_cluster_parsers(sub)
    bench.add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_process()
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
