"""``nasseg evaluate``, ``nasseg predict`` and ``nasseg export``: using a trained checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasseg.device import resolve_device
from nasseg.errors import NassegError
from nasseg.train.checkpoint import load_trained
from nasseg.train.evaluate import DEEPLAB_SCALES, evaluate, load_dataset, resolve_crop, resolve_size
from nasseg.train.export import DEFAULT_OPSET, EXPORTERS, export_onnx
from .args import non_negative_int, opacity, parse_scales, parse_size, parse_size_or_none, positive_int


def cmd_evaluate(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    model, meta = load_trained(args.checkpoint, device)
    dataset = load_dataset(args.data, args.split, meta.mean, meta.std)
    if dataset.num_classes != meta.num_classes:
        raise NassegError(f"{args.checkpoint}: the model predicts {meta.num_classes} classes but "
                          f"dataset {args.data} ({args.split}) has {dataset.num_classes}")
    scales = DEEPLAB_SCALES if args.multi_scale else args.scales
    crop = resolve_crop(args.crop)
    size = resolve_size(args.size, meta.size)
    result = evaluate(model, dataset, device=device, scales=scales, flip=args.flip, crop=crop,
                      base_size=size, progress=not args.json, limit=args.limit, workers=args.workers)
    result.settings.update(checkpoint=str(args.checkpoint), model=meta.label, data=args.data,
                           split=args.split)
    if args.output:
        from nasseg.io import atomic_write_text
        atomic_write_text(args.output, json.dumps(result.to_dict(), indent=2) + "\n")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{meta.label} on {args.data} ({args.split}), input "
              f"{'x'.join(map(str, size)) if size else 'as stored'}, scales {', '.join(map(str, scales))}"
              f"{', flip' if args.flip else ''}, crop {'x'.join(map(str, crop)) if crop else 'none'}")
        print(result.format())
        if args.output:
            print(f"wrote {args.output}")
    return 0


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Test-time options shared by ``nasseg evaluate`` and ``nasseg predict``."""
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--multi-scale", action="store_true",
                       help="average over DeepLab's scales 0.5,0.75,1,1.25,1.5,1.75")
    scale.add_argument("--scales", type=parse_scales, default=(1.0,), metavar="S1,S2,...",
                       help="average over these image scales (default: 1)")
    p.add_argument("--flip", action="store_true", help="also average over horizontally flipped inputs")
    p.add_argument("--crop", type=parse_size_or_none, default=None, metavar="HxW|none",
                   help="sliding windows of HxW over images (or scaled images) larger than it, e.g. "
                        "the training crop (default: none, every image whole in one pass)")
    p.add_argument("--size", type=parse_size_or_none, default=None, metavar="HxW|none",
                   help="resize images to HxW for the model (scale 1); predictions keep the image's "
                        "full resolution (default: the size the checkpoint was trained at, if any; "
                        "none: as they are)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="mIoU, pixel accuracy and per-class IoU of a trained model on a split",
        description="Evaluate a training checkpoint on every image of a dataset split, one image at "
                    "a time, from one confusion matrix summed over the split at the labels' full "
                    "resolution. A model trained at reduced resolution (data.size) sees images resized "
                    "to that size unless --size says otherwise.",
        epilog="Example: nasseg evaluate runs/train/final.pt --data camvid:data/camvid --multi-scale "
               "--flip -o results.json")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or training run directory")
    p.add_argument("--data", required=True, metavar="DATASET[:PATH]",
                   help="the dataset, e.g. camvid_demo or cityscapes:PATH (see nasseg data)")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    add_inference_arguments(p)
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N images")
    p.add_argument("--workers", type=non_negative_int, default=2, metavar="N",
                   help="data loading processes (default: 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("-o", "--output", default=None, metavar="RESULTS.json",
                   help="also write the JSON results here")
    p.set_defaults(run=cmd_evaluate)


def cmd_predict(args: argparse.Namespace) -> int:
    from nasseg.train.predict import collect_images, predict_files

    paths = collect_images(args.images)
    device = resolve_device(args.device)
    model, meta = load_trained(args.checkpoint, device)
    scales = DEEPLAB_SCALES if args.multi_scale else args.scales
    skipped = predict_files(model, meta, paths, Path(args.output), device=device, scales=scales,
                            flip=args.flip, crop=resolve_crop(args.crop),
                            size=resolve_size(args.size, meta.size),
                            alpha=args.overlay_alpha, progress=not args.quiet)
    done = len(paths) - len(skipped)
    print(f"wrote masks and overlays of {done} image{'s' * (done != 1)} to {args.output}")
    if skipped:
        raise NassegError(f"{len(skipped)} of {len(paths)} images could not be read and were "
                          f"skipped (first: {skipped[0]})")
    return 0


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="segment images with a trained model: palette PNG masks and overlays",
        description="Segment image files (or every image in the given folders) with a training "
                    "checkpoint. For each <stem>.<ext> writes <stem>.png (palette PNG, pixel = class "
                    "id) and <stem>_overlay.jpg|png to the output folder. Unreadable images are "
                    "skipped with a message; the exit status is then non-zero.",
        epilog="Example: nasseg predict runs/train/final.pt photos/ street.jpg -o masks --flip")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or training run directory")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created)")
    add_inference_arguments(p)
    p.add_argument("--overlay-alpha", type=opacity, default=0.5, metavar="A",
                   help="opacity of the colour mask in the overlays, 0..1 (default: 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_predict)


def cmd_export(args: argparse.Namespace) -> int:
    model, meta = load_trained(args.checkpoint)
    size = args.input or (int(meta.crop[0]), int(meta.crop[1]))
    metadata = {"nasseg.model": meta.label, "nasseg.classes": json.dumps(list(meta.classes)),
                "nasseg.mean": json.dumps(list(meta.mean)), "nasseg.std": json.dumps(list(meta.std)),
                "nasseg.palette": json.dumps([list(c) for c in meta.palette]),
                "nasseg.input": f"{size[0]}x{size[1]}"}
    report = export_onnx(model, args.output, size, opset=args.opset, dynamic=args.dynamic,
                         exporter=args.exporter, metadata=metadata)
    print(report.format())
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained model to ONNX, verified against PyTorch with onnxruntime",
        description="Export a training checkpoint to one ONNX file (input 'image': normalised "
                    "N x 3 x H x W float32; output 'logits': N x C x H x W) and check it with "
                    "onnxruntime on a random input: fails if max |diff| exceeds 1e-4 x max(1, max "
                    "|logit|). Class names, mean/std and palette are stored as metadata_props.",
        epilog="Example: nasseg export runs/train/final.pt -o model.onnx --input 360x480")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or training run directory")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument("--input", type=parse_size, default=None, metavar="HxW",
                   help="input size (default: the checkpoint's training crop)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch, height and width (verified at a second size)")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="torch.onnx exporter: legacy (TorchScript), dynamo, or auto (default): "
                        "legacy, falling back to dynamo")
    p.set_defaults(run=cmd_export)
