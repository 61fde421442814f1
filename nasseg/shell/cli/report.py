"""``nasseg report``: the HTML report of a search run or an experiment."""

from __future__ import annotations

import argparse
from typing import Any

REPORT_DESCRIPTION = """\
Write one self-contained HTML page (plots and drawings embedded, no network needed) about a search:
its configuration, the early-stop decision and why, loss / mIoU / eigenvalue / op-share / alpha
(and beta) curves, the decoded cells, lattice path and network, its parameters and multiply-adds,
the retraining of the decoded architecture (settings, val mIoU, per-class IoU and training curves
of each --retrain TRAIN_DIR, a finished `nasseg train` run of the run's arch.yaml or
arch/epoch_NNN.yaml, and of RUN_DIR/../retrain, where `nasseg demo` retrains), the per-epoch
metrics table and links to arch.yaml, the per-epoch ArchSpecs and the checkpoint.

DIR is a run directory (OUT/<job>/seed<N>: report.html in it) or an experiment directory holding
run directories (a report in each, plus index.html with a summary table of the trials). A NAS study's
folder (OUT/<study>, docs/study.md) gets index.html with the study's table, comparisons and
mIoU / multiply-adds plot above its searches, whose pages show their architectures' retrainings."""


def add_report_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a search run or experiment",
        description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  nasseg report runs/camvid_darts/seed0\n"
               "  nasseg report runs/camvid_darts/seed0 --retrain runs/camvid_darts/arch\n"
               "  nasseg report runs/camvid_darts -o camvid_darts.html")
    parser.add_argument("target", metavar="DIR", help="RUN_DIR | EXPERIMENT_DIR")
    parser.add_argument("-o", "--output", default=None, metavar="FILE.html",
                        help="where to write (default: DIR/report.html, or DIR/index.html for an experiment)")
    parser.add_argument("--retrain", action="append", default=[], metavar="TRAIN_DIR",
                        help="a finished `nasseg train` run of the run's (or a trial's) arch.yaml or "
                             "arch/epoch_NNN.yaml to show; repeatable")
    parser.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.target, args.output, args.retrain)
    print(f"wrote {path}")
    return 0
