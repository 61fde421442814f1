"""Seconds per search epoch: DARTS first order vs second order vs Auto-DeepLab, and the share of an
epoch spent on the Hessian eigenvalue. All variants run one after another in this process on the same
data, so their ratios are comparable even on a noisy machine.

    python benchmarks/search_cost.py [--dataset camvid_demo|camvid --root PATH] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile

from nasseg.search import Search, parse_job

VARIANTS = {
    "darts_1st": {"space": "darts", "algorithm": "darts", "order": "first"},
    "darts_2nd": {"space": "darts", "algorithm": "darts", "order": "second"},
    "autodeeplab": {"space": "autodeeplab", "algorithm": "autodeeplab", "arch": {"start_epoch": 0}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="camvid_demo")
    parser.add_argument("--root", default=None)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--crop", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    data = {"dataset": args.dataset, "root": args.root, "crop": args.crop, "batch_size": args.batch,
            "size": args.size, "limit": args.limit}
    print(f"{'variant':<12} {'s/epoch':>9} {'eigen s':>8} {'eigen share':>11} {'vs 1st':>7}")
    first = None
    for name, overrides in VARIANTS.items():
        job = {"name": name, "epochs": args.epochs, "data": data, "hessian": {"iters": 10},
               "early_stop": {"rule": "none"}, **overrides}
        with tempfile.TemporaryDirectory() as out:
            search = Search(parse_job(job), 0, out, progress=False)
            search.run_search()
            rows = search.history[1:] or search.history  # the first epoch includes warm-up effects
            seconds = sum(r["epoch_seconds"] for r in rows) / len(rows)
            eigen = sum(r["eigen_seconds"] for r in rows) / len(rows)
        first = first or seconds
        print(f"{name:<12} {seconds:9.1f} {eigen:8.1f} {eigen / seconds:11.1%} {seconds / first:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
