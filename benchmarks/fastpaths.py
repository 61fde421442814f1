"""Each fast path of nasseg.fastpaths on and off: forward + backward of the layers it serves, at DARTS
CIFAR search shapes (batch 64, 16 channels, 32x32), the two settings taking turns in one process;
median milliseconds and the bytes autograd keeps for backward. Re-run it before widening a path's
torch versions or devices.

    python benchmarks/fastpaths.py [--repeats 15] [--threads 1] [--layout nhwc|nchw|both] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from nasseg import fastpaths
from nasseg.layers import CompactMaxPool2d, FactorizedReduce, create_conv2d

LAYERS: dict[str, list[tuple[str, Callable[[int], nn.Module]]]] = {
    "subgrid_dilated_conv": [
        (f"dil_conv {k}x{k} stride {s}", lambda c, k=k, s=s: create_conv2d(c, c, k, s, k - 1, 2, groups=c))
        for k in (3, 5) for s in (1, 2)],
    "subsampled_pointwise_conv": [("factorized_reduce", lambda c: FactorizedReduce(c, 2 * c))],
    "compact_max_pool": [(f"max_pool 3x3 stride {s}", lambda c, s=s: CompactMaxPool2d(3, s, 1)) for s in (1, 2)],
}


def forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], int]:
    """One forward + backward; returns the bytes autograd kept for backward (distinct storages)."""
    def run() -> int:
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(x)
        out.backward(torch.ones_like(out))
        kept.pop(x.untyped_storage().data_ptr(), None)
        return sum(kept.values())
    return run


def measure(name: str, run: Callable[[], int], repeats: int) -> dict[bool, tuple[float, int]]:
    """{on: (median ms, saved bytes)} with path ``name`` on and off, alternating."""
    times: dict[bool, list[float]] = {True: [], False: []}
    saved: dict[bool, int] = {}
    for i in range(repeats + 1):
        for on in ((True, False) if i % 2 else (False, True)):
            with fastpaths.overridden(**{name: on}):
                start = time.perf_counter()
                saved[on] = run()
                if i:  # the first round warms up
                    times[on].append(time.perf_counter() - start)
    return {on: (statistics.median(times[on]) * 1e3, saved[on]) for on in (True, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layout", choices=["nhwc", "nchw", "both"], default="both")
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 16, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layouts = {"nhwc": torch.channels_last, "nchw": torch.contiguous_format}
    print(f"torch {torch.__version__}, {args.device}, {args.threads} thread(s), input {tuple(args.shape)}, "
          f"median of {args.repeats}")
    print(f"{'fast path':<26} {'layer':<24} {'layout':<6} {'on ms':>8} {'off ms':>8} {'on/off':>6} "
          f"{'saved MB on':>11} {'off':>6}")
    for layout in (list(layouts) if args.layout == "both" else [args.layout]):
        x = torch.randn(*args.shape, device=args.device).contiguous(memory_format=layouts[layout])
        x.requires_grad_()
        for name, layers in LAYERS.items():
            for label, build in layers:
                module = build(args.shape[1]).to(args.device, memory_format=layouts[layout])
                result = measure(name, forward_backward(module, x), args.repeats)
                (on_ms, on_bytes), (off_ms, off_bytes) = result[True], result[False]
                print(f"{name:<26} {label:<24} {layout:<6} {on_ms:8.2f} {off_ms:8.2f} {on_ms / off_ms:6.2f} "
                      f"{on_bytes / 2**20:11.1f} {off_bytes / 2**20:6.1f}")


if __name__ == "__main__":
    main()
