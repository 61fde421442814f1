"""``nasseg gpucheck``: nasseg's CUDA paths against the CPU, in one short run (nasseg.shell.gpucheck)."""

from __future__ import annotations

import argparse

from ..bench.settings import SUITES, parse_names, parse_suites
from ..gpucheck import CHECKS, GpuCheckSettings, run_gpucheck
from ..gpucheck.report import FILES, format_markdown, to_json
from .args import positive_int

EXIT_CHECK_FAILED = 1  # a comparison failed or a check raised (like `data check` finding problems)


def cmd_gpucheck(args: argparse.Namespace) -> int:
    checks = parse_names(args.checks, "--checks", "check", CHECKS) if args.checks else CHECKS
    settings = GpuCheckSettings(
        device=args.device, out=args.out, checks=checks, quick=args.quick, seed=args.seed, threads=args.threads,
        bench_suites=parse_suites(args.bench_suites), bench_full=args.bench_full, progress=not args.quiet)
    report = run_gpucheck(settings)
    print(to_json(report) if args.json else format_markdown(report), end="", flush=True)
    if not args.json:
        print(f"wrote {', '.join(str(settings.out / name) for name in FILES)}")
    return EXIT_CHECK_FAILED if report.failed else 0


def add_gpucheck_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "gpucheck", help="run nasseg's CUDA paths once and check them against the CPU (under 10 minutes on a GPU)",
        description="Run the CUDA code paths (bfloat16 autocast in the search, channels-last on CUDA, AMP in "
                    "training, nasseg info --latency, nasseg bench --device cuda, NCCL retraining with 2 GPUs or "
                    "more) next to a CPU reference from the same seed, and check that they agree: search and "
                    f"training steps, the Hessian eigenvalue, the decoded architecture. Checks: {', '.join(CHECKS)}. "
                    "Writes OUT/gpucheck.md, .csv and .json (times, peak GPU memory, pass/fail per comparison), "
                    "OUT/bench.csv and .json, and the compared runs under OUT/runs/. Exit status 1 when a "
                    "comparison fails. docs/performance.md#gpu-check says what each check compares and why.",
        epilog="Examples: nasseg gpucheck;  nasseg gpucheck --device cuda:1 --out runs/gpucheck_h200;  "
               "nasseg gpucheck --device cpu --quick (the harness, both sides on the CPU: every comparison exact)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu to run both sides on the CPU "
                                                         "(default: cuda)")
    parser.add_argument("--out", default="runs/gpucheck", metavar="DIR",
                        help="where the table and the compared runs go (default: runs/gpucheck)")
    parser.add_argument("--checks", default=None, metavar="LIST",
                        help=f"comma-separated checks out of {', '.join(CHECKS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny networks and inputs (a smoke run; the bounds are set for the default sizes)")
    parser.add_argument("--bench-suites", default="darts,autodeeplab,order,checkpoint,hessian", metavar="LIST",
                        help=f"nasseg bench suites of the bench check, out of {', '.join(SUITES)} "
                             "(default: darts,autodeeplab,order,checkpoint,hessian)")
    parser.add_argument("--bench-full", action="store_true",
                        help="the bench check at nasseg bench's full sizes instead of --quick (minutes more)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="torch threads of the CPU side (default: torch's, one per core)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both sides (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the markdown table")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=cmd_gpucheck)
