"""``nasseg demo``: the whole pipeline on the bundled data."""

from __future__ import annotations


def add_demo_parser(sub) -> None:
    demo = sub.add_parser(
        "demo", help="the whole pipeline on the bundled data: search, decode, draw, retrain, evaluate, report",
        description="Run a short DARTS search with Hessian eigenvalue tracking on the bundled CamVid subset "
                    "(a Ray Tune trial on an embedded local Ray), decode and draw the architecture, retrain "
                    "it briefly, evaluate it and write the HTML report. A few minutes on 2 CPU cores.")
    demo.add_argument("--out", default="runs", metavar="DIR", help="where to write (default: runs)")
    demo.add_argument("--address", default=None, metavar="ADDR",
                      help="run the search trial on this Ray cluster instead of an embedded local Ray")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=cmd_demo)


def cmd_demo(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, progress=not args.quiet, address=args.address)
    return 0
