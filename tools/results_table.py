"""Print the markdown tables of docs/results.md from finished training runs.

    .venv/bin/python tools/results_table.py RUN_DIR... --data camvid:../shared/data/camvid [--ms-flip]

For every run directory (``nasseg train`` output) it evaluates ``final.pt`` on the val split the
way ``nasseg evaluate`` does by default (the training ``data.size`` as input, scored at the labels'
full resolution; single scale, and with ``--ms-flip`` also scales 0.75/1/1.25 + flip), counts
parameters and multiply-adds (meta device, at the training size) and reads the training time and
iterations from ``result.json``. Output: a summary table and a per-class IoU table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nasseg.complexity import count_macs, count_params, meta_device  # noqa: E402
from nasseg.train.checkpoint import build_model, load_trained  # noqa: E402
from nasseg.train.evaluate import evaluate, load_dataset  # noqa: E402

MS_FLIP = (0.75, 1.0, 1.25)


def macs_at(meta, size) -> int:
    with meta_device():
        model = build_model(meta).eval()
        x = torch.zeros(1, 3, *size)
    return count_macs(lambda: model(x))


def plot_curves(runs: list[Path], labels: list[str], out: Path) -> None:
    """Training loss (log.csv) and val mIoU at each validation pass (eval.csv), one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, (loss_ax, miou_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, label in zip(runs, labels):
        log, val = pd.read_csv(run / "log.csv"), pd.read_csv(run / "eval.csv")
        loss_ax.plot(log["iteration"], log["loss"].rolling(5, min_periods=1).mean(), label=label)
        miou_ax.plot(val["iteration"], 100 * val["miou"], marker="o", label=label)
    loss_ax.set(xlabel="iteration", ylabel="training loss (mean of 5 logs)", title="loss")
    miou_ax.set(xlabel="iteration", ylabel="val mIoU (%)", title="CamVid val mIoU during training")
    miou_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--ms-flip", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="also write training curves (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, per_class = [], {}
    for run in args.runs:
        model, meta = load_trained(run)
        info = json.loads((run / "result.json").read_text())
        data = load_dataset(args.data, args.split, meta.mean, meta.std)
        single = evaluate(model, data, base_size=meta.size, progress=False)
        ms = evaluate(model, data, base_size=meta.size, scales=MS_FLIP, flip=True,
                      progress=False) if args.ms_flip else None
        size = meta.size or meta.crop
        rows.append((meta.label, meta.model_args, count_params(model.parameters()), macs_at(meta, size), meta.iteration,
                     size, meta.crop, single, ms, info["train_seconds"]))
        per_class[meta.label] = single
        print(f"done {run}", file=sys.stderr, flush=True)
    print("| model | params | multiply-adds | iterations | input (train crop) | val mIoU | "
          + ("mIoU ms+flip | " if args.ms_flip else "") + "pixel acc. | training time |")
    print("|---|---|---|---|---|---|" + ("---|" if args.ms_flip else "") + "---|---|")
    for label, margs, params, macs, iters, size, crop, single, ms, seconds in rows:
        extra = f" {100 * ms.miou:.2f} |" if ms else ""
        kw = f" ({', '.join(f'{k}={v}' for k, v in margs.items())})" if margs else ""
        print(f"| {label}{kw} | {params / 1e6:.2f}M | {macs / 1e9:.2f}G | {iters} | "
              f"{size[0]}x{size[1]} ({crop[0]}x{crop[1]}) | {100 * single.miou:.2f} |{extra} "
              f"{100 * single.pixel_accuracy:.2f} | {seconds / 60:.0f} min |")
    if args.plot:
        plot_curves(args.runs, [r[0] for r in rows], args.plot)
    classes = next(iter(per_class.values())).classes
    print()
    print("| class | " + " | ".join(per_class) + " |")
    print("|---|" + "---|" * len(per_class))
    for i, name in enumerate(classes):
        print(f"| {name} | " + " | ".join(f"{100 * r.iou[i]:.1f}" for r in per_class.values()) + " |")


if __name__ == "__main__":
    main()
