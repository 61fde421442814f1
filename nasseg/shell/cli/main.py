"""The ``nasseg`` command line: one parser per sub-command, each in its own module of this package.

Bad input raises NassegError anywhere below, which :func:`main` prints as one line
(``nasseg: error: ...``) with exit status 2, never a traceback. Any other exception is a bug: one
line ``nasseg: internal error: ...`` with exit status 3; ``--debug`` prints the traceback too.

Exit status: 0 done, 1 problems found by ``data check`` or a failed ``gpucheck``, 2 bad input
(including argparse's usage errors), 3 internal error, 130 interrupted (docs/errors.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

from nasseg.errors import NassegError, worker_error_message
from nasseg.rundirs import check_resume_restart

from ..process import configure_process
from . import bench, cluster, data, demo, gpucheck, inference, info, plan, report, schema, search, show, train

EPILOG = ("Docs: docs/quickstart.md; errors and exit codes: docs/errors.md. Every command takes --help.")
DEBUG_HELP = "on an error, print the Python traceback too (for bug reports)"
EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    from nasseg import __version__

    parser = argparse.ArgumentParser(
        prog="nasseg",
        description="Neural architecture search for semantic segmentation: search spaces in YAML, "
                    "DARTS / Auto-DeepLab searches with Hessian early stopping, decoding, retraining.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"nasseg {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (info.add_info_parser, search.add_search_parsers, demo.add_demo_parser, train.add_train_parser,
                data.add_data_parser, show.add_show_parser, report.add_report_parser, inference.add_evaluate_parser,
                inference.add_predict_parser, inference.add_export_parser, search.add_results_parser,
                cluster.add_cluster_parsers, bench.add_bench_parser, plan.add_plan_parser,
                gpucheck.add_gpucheck_parser, schema.add_schema_parser):  # in the order `nasseg --help` lists them
        add(sub)
    _add_debug_everywhere(sub)
    return parser


def _add_debug_everywhere(sub: argparse._SubParsersAction) -> None:
    """``--debug`` after the command too (``nasseg train ... --debug``), on every sub-command."""
    for parser in sub.choices.values():
        if any("--debug" in action.option_strings for action in parser._actions):
            continue
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_everywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    configure_process()
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        check_resume_restart(getattr(args, "resume", False), getattr(args, "restart", False))
        return run(args)
    except NassegError as exc:
        if debug:
            traceback.print_exc()
        print(f"nasseg: error: {worker_error_message(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nasseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `nasseg info ... | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:  # a bug: the net under every command, not the way to report bad input
        if debug:
            traceback.print_exc()
        message = " ".join(str(exc).split())
        message = message if len(message) <= 300 else message[:297] + "..."
        hint = "please report it" if debug else "run with --debug for the traceback; please report it"
        print(f"nasseg: internal error: {type(exc).__name__}: {message} ({hint})", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
