"""``nasseg show``: graphviz drawings of cells, spaces, lattices and search runs."""

from __future__ import annotations

import argparse
from typing import Any

SHOW_DESCRIPTION = """\
Draw a cell, a search space or a search run with graphviz.

TARGET is one of
  an ArchSpec YAML or built-in architecture (darts_v2, autodeeplab): its decoded cells
      (DARTS-paper style) and, for a lattice architecture, its path through the strides;
  a search-space YAML or built-in space (darts, darts_cifar, autodeeplab, ...; write
      space:autodeeplab where an architecture has the same name): every candidate edge of
      the cell and, for a lattice space, the Auto-DeepLab lattice;
  a search run directory (OUT/<job>/seed<N>): the architecture it found (arch.yaml, or the
      one decoded after --epoch N), the search-space cell with that epoch's softmax(alpha)
      on every edge and, for a lattice search, the lattice weighted by softmax(beta) with
      the decoded path in red."""


def add_show_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "show", help="draw cells, search spaces, the Auto-DeepLab lattice or a search run (graphviz)",
        description=SHOW_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  nasseg show darts_v2 -o darts_v2.png\n"
               "  nasseg show space:autodeeplab -o lattice.svg\n"
               "  nasseg show runs/camvid_darts/seed0 --epoch 10 --cell normal -o epoch10.pdf\n"
               "Needs graphviz (apt-get install graphviz) except for .dot/.gv output.")
    parser.add_argument("target", metavar="TARGET", help="ARCH.yaml | SPACE.yaml | RUN_DIR | built-in name")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="picture to write; the suffix picks the format: .svg, .png, .pdf "
                             "(or .dot/.gv for the graphviz source)")
    parser.add_argument("--epoch", type=int, default=None, metavar="N",
                        help="run directory only: draw the architecture and weights after epoch N "
                             "(default: the run's answer, arch.yaml)")
    parser.add_argument("--cell", default=None, metavar="KIND", choices=("normal", "reduce"),
                        help="draw only this cell type: normal or reduce (default: every cell type)")
    parser.set_defaults(run=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from nasseg.viz.draw import show

    path = show(args.target, args.output, epoch=args.epoch, kind=args.cell)
    print(f"wrote {path}")
    return 0
