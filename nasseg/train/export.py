"""``nasseg export``: a trained model as an ONNX file, checked against PyTorch with onnxruntime.

Exporter choice (export seconds measured on torch 2.13, onnxruntime 1.32, one CPU thread, 64x96
input, 11 classes; the legacy exporter is ``torch.onnx.export(dynamo=False)``, TorchScript
tracing; every graph that ran matched PyTorch to max |diff| <= 4e-7, argmax agreement 100%):

================================  =================  ================  =================
model                             legacy             dynamo            dynamo --dynamic
================================  =================  ================  =================
deeplabv3plus_mobilenetv2         0.8 s, dyn. ok     9 s               31 s, ok
icnet_resnet50 (half width)       fails (*)          7-14 s            29 s, fixed (**)
darts_v2_seg                      1.6 s, dyn. ok     17 s              31 s, ok
================================  =================  ================  =================

(*) ICNet's pyramid pooling calls ``adaptive_avg_pool2d`` on a feature map whose size is computed
in ``forward`` (``half()`` reads ``x.shape``); the tracer cannot see that size, so it has no ONNX
form. (**) dynamo bakes the pooling windows of the traced size into index tensors: the graph
declares dynamic H/W but fails in onnxruntime at any other size.

So ``--exporter auto`` (the default) tries the legacy exporter first (5-20x faster, and its
dynamic H/W axes work for these convnets) and falls back to dynamo when legacy fails to export or
to verify. Every export is verified with onnxruntime at the export size and, with ``--dynamic``, at
a second batch size and H/W, so a graph that silently specialised on the traced shape (ICNet
above) is an error rather than a broken file. Output is one self-contained file (no external
weights file); the file is only put in place after it verified.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import NassegError
from ..extras import check_extra, require

EXPORTERS = ("auto", "legacy", "dynamo")
DEFAULT_OPSET = 18
OPSETS = range(7, 24)  # what torch.onnx exports (torch.onnx._constants: ONNX_MIN_OPSET..ONNX_MAX_OPSET)
TOLERANCE = 1e-4  # max |onnx - torch| allowed, relative to max(1, max |torch logits|)
INPUT_NAME, OUTPUT_NAME = "image", "logits"
FEATURE = "nasseg export"  # names the feature in the error when the 'export' extra is missing


@dataclass
class ExportReport:
    path: Path
    exporter: str
    input_size: tuple[int, int]
    dynamic: bool
    opset: int
    seconds: float  # export only
    max_abs_diff: float  # worst over the checked inputs
    max_abs_logit: float
    argmax_agreement: float  # fraction of pixels with the same class (worst checked input)
    checked_shapes: list[tuple[int, ...]]
    file_bytes: int

    def format(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.checked_shapes)
        return (f"wrote {self.path} ({self.file_bytes / 2**20:.1f} MiB, opset {self.opset}, {self.exporter} exporter, "
                f"{self.seconds:.1f} s, input "
                f"{'N x 3 x H x W (dynamic)' if self.dynamic else 'x'.join(map(str, (1, 3, *self.input_size)))})\n"
                f"onnxruntime vs PyTorch on {shapes}: max |diff| {self.max_abs_diff:.2e} (max |logit| "
                f"{self.max_abs_logit:.2f}), argmax agreement {100 * self.argmax_agreement:.3f}%")


@contextlib.contextmanager
def _quiet():
    """Silence the exporters: warnings, log records, and C++ output on file descriptors 1 and 2.

    The legacy exporter always enables TorchScript's ONNX log (torch 2.13 tests the function
    ``_jit_is_onnx_log_enabled`` instead of calling it) and on failure dumps the whole traced graph
    (thousands of lines) to C++ stdout; only redirecting the descriptors keeps it off the terminal.
    """
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            for fd in saved:
                os.dup2(devnull.fileno(), fd)
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        logger.setLevel(level)


def _export(model: nn.Module, x: torch.Tensor, path: Path, exporter: str, opset: int, dynamic: bool) -> None:
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    if exporter == "legacy":
        if dynamic:
            axes = {0: "batch", 2: "height", 3: "width"}
            kwargs["dynamic_axes"] = {INPUT_NAME: axes, OUTPUT_NAME: axes}
        torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
    else:
        if dynamic:
            dim = torch.export.Dim.DYNAMIC
            kwargs["dynamic_shapes"] = ({0: dim, 2: dim, 3: dim},)
        torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, verbose=False, **kwargs)


def compare(model: nn.Module, path: Path, shapes: Sequence[tuple[int, ...]],
            seed: int = 0) -> tuple[float, float, float]:
    """(max |diff|, max |torch logit|, worst argmax agreement) of onnxruntime vs PyTorch."""
    ort = require("onnxruntime", "export", FEATURE)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are reported by the exception below, not ORT's log
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    diff = scale = 0.0
    agreement = 1.0
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            ref = model(x).numpy()
        try:
            out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        except Exception as e:
            reason = " ".join(str(e).split())[:160]
            raise NassegError(f"onnxruntime fails on input {'x'.join(map(str, shape))} ({reason})") from None
        if out.shape != ref.shape:
            raise NassegError(f"ONNX output shape {out.shape} != PyTorch {ref.shape} for input {shape}")
        diff = max(diff, float(np.abs(out - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        agreement = min(agreement, float((out.argmax(1) == ref.argmax(1)).mean()))
    return diff, scale, agreement


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    onnx = require("onnx", "export", FEATURE)
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int], *,
                opset: int = DEFAULT_OPSET, dynamic: bool = False, exporter: str = "auto",
                metadata: dict[str, str] | None = None, tolerance: float = TOLERANCE) -> ExportReport:
    """Export ``model`` (moved to the CPU, eval mode) to ``path`` and verify it with onnxruntime.

    Raises NassegError (file not written) when no exporter produces a graph whose outputs match
    PyTorch within ``tolerance``, naming each exporter's problem.
    """
    if exporter not in EXPORTERS:
        raise NassegError(f"unknown exporter {exporter!r} (expected {', '.join(EXPORTERS)})")
    if opset not in OPSETS:
        raise NassegError(f"ONNX opset {opset}: expected an opset torch exports, {OPSETS[0]}..{OPSETS[-1]}")
    check_extra("export", FEATURE)  # onnx, onnxscript (the dynamo exporter), onnxruntime: before any work
    model = model.cpu().eval()
    path = Path(path)
    if path.is_dir():
        raise NassegError(f"{path}: is a directory; expected the ONNX file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NassegError(f"{path}: cannot write here ({e.strerror}: {e.filename})") from None
    tmp = path.with_name(f".{path.name}.tmp")
    # the export size, and with --dynamic another batch size and H/W (a graph specialised on the traced shape fails)
    shapes = [(1, 3, *input_size)] + ([(2, 3, input_size[0] + 32, input_size[1] + 16)] if dynamic else [])
    problems: list[str] = []
    for name in ("legacy", "dynamo") if exporter == "auto" else (exporter,):
        problem = ""
        try:
            start = time.perf_counter()
            with _quiet():
                _export(model, torch.zeros(1, 3, *input_size), tmp, name, opset, dynamic)
            seconds = time.perf_counter() - start
            diff, scale, agreement = compare(model, tmp, shapes)
            if diff > tolerance * max(1.0, scale):
                problem = f"max |diff| {diff:.2e} exceeds {tolerance:g} x max(1, max |logit| {scale:.2f})"
        except Exception as e:  # exporter/onnxruntime errors: report, try the next exporter
            problem = " ".join(str(e).split())[:200] or type(e).__name__
        if problem:
            problems.append(f"{name}: {problem}")
            tmp.unlink(missing_ok=True)
            continue
        if metadata:
            _add_metadata(tmp, metadata)
        os.replace(tmp, path)
        return ExportReport(path, name, input_size, dynamic, opset, seconds, diff, scale, agreement, shapes,
                            path.stat().st_size)
    raise NassegError(f"ONNX export of {path.name} failed verification "
                      f"({'dynamic' if dynamic else 'x'.join(map(str, input_size))}): " + "; ".join(problems))
