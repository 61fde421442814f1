"""``nasseg train``: retrain a decoded architecture or a baseline (a model, an ArchSpec or a job file)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nasseg.config import apply_overrides, load_document, set_keys
from nasseg.errors import NassegError
from nasseg.rundirs import run_path
from nasseg.train.config import is_train_job, parse_train_job
from nasseg.train.trainer import Trainer

from .args import parse_size
from .plan import add_force_argument, check_memory

# flag -> job key; flags left unset keep the job's value (or the default)
FLAG_KEYS = {"size": "data.size", "crop": "data.crop", "batch_size": "data.batch_size",
             "loader_workers": "data.workers", "iters": "iters", "lr": "optim.lr",
             "checkpoint_every": "checkpoint_every", "eval_every": "eval_every", "seed": "seed",
             "device": "device", "name": "name", "pretrained": "pretrained"}


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The job keys the flags set: ``--data NAME[:PATH]`` is data.dataset and data.root."""
    values = {key: list(value) if isinstance(value, tuple) else value
              for flag, key in FLAG_KEYS.items() if (value := getattr(args, flag)) is not None}
    if args.data is not None:
        name, _, root = args.data.partition(":")
        values.update({"data.dataset": name.strip(), "data.root": root.strip() or None})
    return values


def load_config(args: argparse.Namespace):
    """The training job: TARGET's job file (or a job of the model TARGET names), then the flags, then
    ``--model-arg`` and ``--set`` (values are YAML)."""
    for item in args.model_arg:
        if "=" not in item:
            raise NassegError(f"--model-arg: expected KEY=VALUE, got {item!r}")
    target, file = args.target, None
    if target.endswith((".yaml", ".yml")) and not Path(target).is_file():
        raise NassegError(f"{target}: file not found (expected a training job, an ArchSpec or a model name)")
    if target.endswith((".yaml", ".yml")) and is_train_job(target):
        data, file = load_document(target), target
    else:
        data = {"model": target}
    overrides = [f"model_args.{item}" for item in args.model_arg] + list(args.set)
    return parse_train_job(apply_overrides(set_keys(data, flag_values(args), "flags"), overrides, file), file)


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args)
    if args.workers is not None:
        return _train_distributed(args, config)
    if args.address:
        raise NassegError("--address runs Ray Train workers on a cluster; pass --workers N with it")
    if not args.force:
        check_memory(config)
    trainer = Trainer(config, args.out, resume=args.resume, restart=args.restart, progress=not args.quiet)
    where = f"resuming {trainer.run_dir} at iteration {trainer.iteration}" if args.resume \
        else f"training {config.name} -> {trainer.run_dir}"
    print(f"{where} ({config.iters} iterations, {len(trainer.train_set)} training images, "
          f"device {trainer.device})", flush=True)
    result = trainer.run()
    if result is not None and not args.quiet:
        print(trainer.final_eval.format())
    return _print_result(result, trainer.run_dir)


def _print_result(result: dict[str, Any] | None, run_dir: Path) -> int:
    if result is not None:
        print(f"val mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
              f"({result['iterations']} iterations, {result['train_seconds']:.0f} s training)")
        print(f"weights: {run_dir / 'final.pt'}   results: {run_dir / 'result.json'}")
    return 0


def _train_distributed(args: argparse.Namespace, config) -> int:
    """``--workers N``: data-parallel training on Ray Train workers (nasseg.runner.distributed_train)."""
    from ..runner.distributed_train import resume_point, run_distributed

    run_dir = run_path(Path(args.out).resolve(), config.name)
    resuming = args.resume and (run_dir / "checkpoints" / "last.pt").is_file()
    verb = f"resuming {run_dir} at iteration {resume_point(run_dir)}" if resuming \
        else f"training {config.name} -> {run_dir}"
    print(f"{verb} on {args.workers} Ray Train workers ({config.iters} iterations, global batch "
          f"{config.data.batch_size})", flush=True)
    return _print_result(run_distributed(config, args.out, args.workers, resume=args.resume, restart=args.restart,
                                         address=args.address, progress=not args.quiet), run_dir)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train", help="train a decoded architecture or a baseline model (SGD, poly lr, resumable)",
        description="Train TARGET: a training job file (see jobs/retrain_*.yaml), an ArchSpec YAML from "
                    "`nasseg decode`, or a model name (`nasseg info --help` lists them). Flags override the "
                    "job. Writes OUT/<name>/: log.csv, eval.csv, tb/ (TensorBoard), checkpoints/last.pt, "
                    "final.pt and result.json (val mIoU, per-class IoU).",
        epilog="Examples: nasseg train deeplabv3plus_mobilenetv2 --data camvid:../shared/data/camvid "
               "--size 180x240 --crop 160x224 --iters 2000;  nasseg train jobs/retrain_camvid_icnet.yaml "
               "--resume;  nasseg train jobs/retrain_camvid_icnet.yaml --workers 2")
    train.add_argument("target", metavar="MODEL_OR_ARCH_OR_JOB")
    train.add_argument("--data", metavar="DATASET[:PATH]", default=None,
                       help="e.g. camvid:../shared/data/camvid, cityscapes:/data/cityscapes, camvid_demo")
    train.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                       help="resize images to HxW first (reduced resolution; evaluation too)")
    train.add_argument("--crop", type=parse_size, default=None, metavar="HxW", help="random training crop")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--iters", type=int, default=None, help="training iterations")
    train.add_argument("--lr", type=float, default=None, help="base learning rate (poly decay)")
    train.add_argument("--loader-workers", type=int, default=None, metavar="N",
                       help="data-loading processes per training process (job key data.workers)")
    train.add_argument("--workers", type=int, default=None, metavar="N",
                       help="data-parallel training on N Ray Train workers (gloo on CPU, NCCL on GPU); "
                            "data.batch_size stays the global batch")
    train.add_argument("--address", default=None, metavar="ADDR",
                       help="with --workers: the Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                       help="write a resumable checkpoint every N iterations")
    train.add_argument("--eval-every", type=int, default=None, metavar="N",
                       help="validate every N iterations (default: only at the end)")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    train.add_argument("--name", default=None, help="run name (default: the job / model name)")
    train.add_argument("--pretrained", default=None, metavar="FILE",
                       help="local backbone weights (torchvision names), never downloaded")
    train.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="model builder keyword, e.g. --model-arg output_stride=8 (repeatable)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any job key, e.g. --set optim.warmup_iters=100 (value is YAML)")
    train.add_argument("--out", default="runs/train", metavar="DIR", help="where runs go (default: runs/train)")
    train.add_argument("--resume", action="store_true", help="continue OUT/<name> from checkpoints/last.pt")
    train.add_argument("--restart", action="store_true", help="discard an existing OUT/<name> and start over")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_force_argument(train)
    train.set_defaults(run=cmd_train)
