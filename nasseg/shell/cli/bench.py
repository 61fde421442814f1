"""``nasseg bench``: the performance suites' command line (the suites are in nasseg.shell.bench)."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import torch

from nasseg.errors import NassegError

from ..bench.hessian import resolve_job
from ..bench.output import format_table, plot_ratios, write_csv, write_json
from ..bench.peers import peer_folder
from ..bench.run import run_bench
from ..bench.settings import DEFAULT_JOB, DEFAULT_SUITES, SUITES, Settings, parse_suites


MAX_THREADS = 256  # torch.set_num_threads with tens of thousands of threads crashes the process
MAX_CROP = 1024  # an Auto-DeepLab supernet step at a 1024 crop already needs tens of GB


def settings_from_args(args: argparse.Namespace) -> Settings:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise NassegError(f"--device {args.device}: expected cpu, cuda or cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise NassegError(f"--device {args.device}: CUDA is not available on this machine")
    if (args.repeats is not None and args.repeats < 1) or args.warmup < 0 or not 1 <= args.threads <= MAX_THREADS:
        raise NassegError(f"--repeats must be >= 1, --warmup >= 0 and --threads 1..{MAX_THREADS}")
    for flag, value, low in (("--epoch-steps", args.epoch_steps, 0), ("--ray-trials", args.ray_trials, 1)):
        if value is not None and value < low:
            raise NassegError(f"{flag} must be >= {low}, got {value}")
    if not 0 <= args.seed < 2**32:
        raise NassegError(f"--seed must be 0..{2**32 - 1}, got {args.seed}")
    crops = _crops(args.adl_crops)
    for path in (args.csv, args.json, args.plot):  # an unwritable output fails now, not after the suites ran
        _check_output(path)
    quick = args.quick
    suites = parse_suites(args.suite) if args.suite else DEFAULT_SUITES
    # bad paths fail now, not after the suites before them have run for an hour
    if "hessian" in suites and (args.job or not quick):
        resolve_job(args.job or DEFAULT_JOB)
    if "peers" in suites:
        peer_folder(args.peer_dir)
    return Settings(
        suites=suites, device=args.device, threads=args.threads,
        repeats=args.repeats if args.repeats is not None else (2 if quick else 3),
        warmup=args.warmup, quick=quick, darts_space=args.darts_space,
        adl_crops=crops or ((17,) if quick else (129, 321)), job=args.job,
        epoch_steps=args.epoch_steps if args.epoch_steps is not None else (2 if quick else 10),
        ray_trials=args.ray_trials, peer_dir=args.peer_dir, memory=args.memory, seed=args.seed,
        progress=not args.quiet)


def _crops(text: str | None) -> tuple[int, ...] | None:
    try:
        crops = tuple(int(c) for c in text.split(",") if c.strip()) if text else None
    except ValueError:
        crops = ()
    if crops is not None and (not crops or not all(16 <= c <= MAX_CROP for c in crops)):
        raise NassegError(f"--adl-crops: expected sizes 16..{MAX_CROP} such as 129,321, got {text!r}")
    return crops


def _check_output(path: str | None) -> None:
    if path is None or path == "-":
        return
    if Path(path).is_dir():
        raise NassegError(f"{path}: is a directory; expected a file name to write")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=Path(path).parent):  # the folder takes files (not /proc, not read-only)
            pass
    except OSError as e:
        raise NassegError(f"{path}: cannot write here ({e.strerror}: {e.filename})") from None


def cmd_bench(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    rows = run_bench(settings)
    if args.json == "-":
        write_json(rows, settings, "-")
    else:
        print(format_table(rows, settings), flush=True)
        if args.json:
            write_json(rows, settings, args.json)
            print(f"wrote {args.json}")
    if args.csv:
        write_csv(rows, args.csv)
        if args.csv != "-":
            print(f"wrote {args.csv}")
    if args.plot:
        plot_ratios(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_bench_parser(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="supernet step time / peak memory vs the papers' straightforward code, and other ratios",
        description="Measure nasseg's supernets against the straightforward implementation of the papers' code "
                    "(nasseg.shell.bench.straightforward) at equal settings, against the original codes (peers), "
                    f"and the other ratios of the performance targets. Suites: {', '.join(SUITES)} (default: "
                    f"{', '.join(DEFAULT_SUITES)}; ray starts a local Ray and peers runs the original codes for "
                    "many minutes: both only when asked for). Prints the measured numbers, their ratios and "
                    "whether each target is met.",
        epilog="Examples: nasseg bench --quick; nasseg bench --suite darts,autodeeplab --adl-crops 129 "
               "--json bench.json --plot bench.png; nasseg bench --suite peers --peer-dir ../shared/peerbench; "
               "nasseg bench --suite all --device cuda")
    bench.add_argument("--suite", default=None, metavar="LIST",
                       help=f"comma-separated suites out of {', '.join(SUITES)}, or all (default: "
                            f"{','.join(DEFAULT_SUITES)})")
    bench.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    bench.add_argument("--threads", type=int, default=1,
                       help="torch intra-op threads (default: 1, for stable ratios)")
    bench.add_argument("--repeats", type=int, default=None, metavar="N",
                       help="timed steps per variant, median reported (default: 3; 2 with --quick)")
    bench.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed steps first (default: 1)")
    bench.add_argument("--quick", action="store_true",
                       help="tiny networks and inputs: a smoke run of the harness in well under a minute")
    bench.add_argument("--darts-space", default="darts_cifar", metavar="SPACE",
                       help="space of the DARTS net (default: darts_cifar, the paper's CIFAR search net)")
    bench.add_argument("--adl-crops", default=None, metavar="LIST",
                       help="Auto-DeepLab crop sizes (default: 129,321; 17 with --quick)")
    bench.add_argument("--job", default=None, metavar="JOB.yaml",
                       help=f"hessian suite: a search job file or the name of a job shipped with nasseg "
                            f"(default: {DEFAULT_JOB}; a tiny camvid_demo job with --quick)")
    bench.add_argument("--epoch-steps", type=int, default=None, metavar="N",
                       help="hessian suite: time N search steps and extrapolate to the epoch (0: the whole "
                            "epoch; default: 10, 2 with --quick)")
    bench.add_argument("--ray-trials", type=int, default=None, metavar="N",
                       help="ray suite: number of parallel trials (default: the CPU count, 2 to 4)")
    bench.add_argument("--peer-dir", default="../shared/peerbench", metavar="DIR",
                       help="peers suite: the folder of the side-by-side scripts of the original codes "
                            "(side_by_side_darts.py, side_by_side_adl.py; default: ../shared/peerbench, relative "
                            "to the current directory)")
    bench.add_argument("--memory", choices=("subprocess", "inprocess", "off"), default="subprocess",
                       help="where peak memory is measured: a fresh process per variant (default), this "
                            "process (less clean on CPU), or not at all")
    bench.add_argument("--seed", type=int, default=0, help="seed of weights and random batches (default: 0)")
    bench.add_argument("--csv", nargs="?", const="-", default=None, metavar="PATH",
                       help="also write the rows as CSV (to stdout without PATH)")
    bench.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                       help="write settings and rows as JSON to PATH, or print only JSON without PATH")
    bench.add_argument("--plot", default=None, metavar="PATH", help="bar chart of the ratios (png/svg/pdf)")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(run=cmd_bench)
