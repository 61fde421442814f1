"""Where a DARTS CIFAR search step's time goes, and whether other kernel formulations pay (issue 19).

    python benchmarks/darts_kernels.py profile [--batch 16]          # self-CPU time by aten op and by kernel kind
    python benchmarks/darts_kernels.py kernels [--repeats 9] [--layout nhwc|nchw|both] [--only NAME,...] [--compile]
    python benchmarks/darts_kernels.py step --path batched_subgrids [--batch 64] [--repeats 3] [--net autodeeplab]
    python benchmarks/darts_kernels.py compiled-step [--batch 64] [--repeats 3]
    python benchmarks/darts_kernels.py kernels --net autodeeplab --only "a." [--repeats 9] --layout nhwc

``profile``: torch.profiler (CPU, 1 thread) of one weight step and one first-order architecture step of
the bench's DARTS search net (C=16, 8 cells, 32x32, channels-last, as ``nasseg bench`` builds it).
``kernels``: forward + backward of the step's kernels at the real shapes (N=64; C=16/32/64 at 32/16/8 px),
each alternative against the current formulation, taking turns in one process (median ms), with its float64
max abs difference to the current one (outputs and every gradient).
``step``: whole search steps (first-order architecture step, then weight step) of that net with a fast path
on and off, taking turns in one process; median seconds.
``compiled-step``: the same steps, nasseg's default supernet against one whose every MixedOp runs a
torch.compile'd (inductor) forward + backward: the seconds of the first step (the compiles) and the medians after.
``kernels --net autodeeplab``: the ``a.`` cases (k edges that read one state as one call) at the Auto-DeepLab
lattice's shapes (F=8, batch 2, 128x128: N = 2 or stacked transitions, C=8/16/32/64 at 32/16/8/4 px), with k = 5
(the edges from one cell input) and 10 (from both).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import tempfile
import time
from typing import Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from nasseg.layers import SepConv, create_conv2d
from nasseg.supernet.depthwise import batched_subgrid_conv

LAYOUTS = {"nhwc": torch.channels_last, "nchw": torch.contiguous_format}
# (N, C, px) of each stage of the search net; k: how many edges read one state, for the a. cases
SHAPES = {"darts": ((64, 16, 32), (64, 32, 16), (64, 64, 8)),
          "autodeeplab": ((4, 8, 32), (6, 16, 16), (6, 32, 8), (4, 64, 4))}
EDGES_READING_ONE_STATE = {"darts": (4, 2), "autodeeplab": (5, 10)}


# --- profile -------------------------------------------------------------------------------------

def kernel_kind(name: str, shapes: list) -> str:
    """The kind of kernel an aten op is (convs by their weight's shape)."""
    weight = shapes[1] if name == "aten::mkldnn_convolution" else shapes[2] if name == "aten::convolution_backward" \
        else None
    if weight:
        size = "x".join(map(str, weight[2:]))
        kind = f"depthwise {size}" if weight[1] == 1 else "1x1" if weight[2:] == [1, 1] else f"dense {size}"
        return f"conv {kind} {'bwd' if 'backward' in name else 'fwd'}"
    groups = {"batch_norm": ("native_batch_norm",), "pool": ("pool", "scatter_add", "CompactMaxPool"),
              "relu": ("threshold_backward", "clamp_min", "relu"),
              "elementwise mul/add/sum": ("aten::mul", "aten::add", "aten::sum", "aten::sub", "aten::div"),
              "copy/fill/empty": ("copy_", "fill_", "empty", "zero_", "cat", "contiguous")}
    for group, keys in groups.items():
        if any(key in name for key in keys):
            return group + (" bwd" if group == "batch_norm" and "backward" in name else "")
    return "other"


SUBTREES = {  # parts of a step, by the ops whose inclusive time they are
    "compact max pool fwd + bwd (layers.CompactMaxPool2d)": ("_CompactMaxPool", "_CompactMaxPoolBackward"),
    "native max pool fwd + bwd": ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"),
    "avg pool fwd + bwd": ("aten::avg_pool2d", "aten::avg_pool2d_backward"),
    "backward of slices (sub-grid and subsampled views; zeros + copy)": ("aten::slice_backward",),
    "MulBackward0 (mixed sums' weights)": ("autograd::engine::evaluate_function: MulBackward0",),
    "BatchNorm fwd + bwd": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "optimizer step + grad clipping": ("Optimizer.step#SGD.step", "aten::_foreach_norm", "aten::_foreach_mul_"),
}


def profile(batch: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from nasseg.heap import keep_freed_heap
    from nasseg.shell.bench.nets import NetConfig, Variant

    keep_freed_heap()
    config = NetConfig(*STEP_NETS[net](batch))
    variant = Variant(config, "ours", torch.device("cpu"))
    variant.arch_step(), variant.weight_step()  # warm up
    for label, step in (("weight step", variant.weight_step), ("architecture step (first order)", variant.arch_step)):
        start = time.perf_counter()
        step()
        plain = time.perf_counter() - start
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
        events = prof.key_averages(group_by_input_shape=True)
        total = sum(e.self_cpu_time_total for e in events)
        by_op: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
        by_kind: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
        for e in events:
            for table, key in ((by_op, e.key), (by_kind, kernel_kind(e.key, e.input_shapes))):
                table[key][0] += e.count
                table[key][1] += e.self_cpu_time_total
        print(f"\n{label}, batch {batch}: {plain:.2f} s unprofiled, {total / 1e6:.2f} s self CPU profiled")
        inclusive: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
        for e in events:
            for part, keys in SUBTREES.items():
                if e.key in keys:
                    inclusive[part][0] += e.count
                    inclusive[part][1] += e.cpu_time_total
        print("| part (inclusive CPU time) | calls | ms | % of step |\n|---|---:|---:|---:|")
        for part, (calls, us) in inclusive.items():
            print(f"| {part} | {calls:.0f} | {us / 1e3:.0f} | {100 * us / total:.1f} |")
        for title, table, rows in (("aten op", by_op, top), ("kernel kind", by_kind, None)):
            print(f"| {title} | calls | self ms | % of step |\n|---|---:|---:|---:|")
            for key, (calls, us) in sorted(table.items(), key=lambda kv: -kv[1][1])[:rows]:
                print(f"| {key} | {calls:.0f} | {us / 1e3:.0f} | {100 * us / total:.1f} |")



# --- kernels ---------------------------------------------------------------------------------------

Run = Callable[[torch.Tensor], list]  # x -> outputs (each backpropagated with a fixed random gradient)


def sep_convs(k: int, C: int, kernel: int, stride: int, dilation: int = 1) -> list[nn.Module]:
    """k DARTS sep_conv (dilation 1) or dil_conv blocks as the supernet holds them (leading ReLU stripped)."""
    from nasseg.layers import DilConv, replace_modules
    from nasseg.supernet.mixed import strip_leading_relu
    padding = dilation * (kernel // 2)
    mods = [SepConv(C, C, kernel, stride, padding, affine=False) if dilation == 1
            else DilConv(C, C, kernel, stride, padding, dilation, affine=False) for _ in range(k)]
    for m in mods:
        strip_leading_relu(m)
        replace_modules(m, batched_subgrid_conv)  # a dilated conv as the supernet runs it
    return mods


def _batch_norm(y: torch.Tensor, bns: list[nn.BatchNorm2d]) -> torch.Tensor:
    """BatchNorm (training) of the k edges' channels at once; running statistics written back to each edge."""
    mean, var = torch.cat([b.running_mean for b in bns]), torch.cat([b.running_var for b in bns])
    y = F.batch_norm(y, mean, var, None, None, True, bns[0].momentum, bns[0].eps)
    with torch.no_grad():
        for b, m, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns))):
            b.running_mean.copy_(m), b.running_var.copy_(v), b.num_batches_tracked.add_(1)
    return y


def batched_blocks(mods: list[nn.Module], multiplier: bool) -> Run:
    """The k edges' sep/dil convs as one call per layer: channels edge-major (edge j at j*C..), depthwise
    convs with groups=k*C, 1x1 convs with groups=k, BN over k*C channels. ``multiplier``: the first
    depthwise conv reads x once with channel multiplier k (groups=C, channel-major output) and the first
    1x1 conv is one dense (k*C)^2 conv with a block-permuted weight (k x its multiply-adds) that returns
    edge-major channels; else x is concatenated k times."""
    k = len(mods)
    blocks = [[m] if isinstance(m[0], nn.Identity) else list(m) for m in mods]  # DilConv: [relu, dw, pw, bn]
    wide: dict[int, nn.Module] = {}

    def run(x: torch.Tensor) -> list:
        C = x.shape[1]
        y = None
        for b in range(len(blocks[0])):
            layers = [blk[b] for blk in blocks]
            dw, pw = layers[0][1], layers[0][2]
            if b:
                y = F.relu(y)
            if b == 0 and multiplier:
                w = torch.stack([layer[1].weight for layer in layers], 1).flatten(0, 1)
                y = F.conv2d(x, w, None, dw.stride, dw.padding, dw.dilation, C)
                P = torch.stack([layer[2].weight[:, :, 0, 0] for layer in layers])
                eye = torch.eye(k, dtype=P.dtype, device=P.device)
                y = F.conv2d(y, torch.einsum("joc,jl->jocl", P, eye).reshape(k * C, C * k, 1, 1))
            else:
                if y is None:
                    y = torch.cat([x] * k, 1)
                w = torch.cat([layer[1].weight for layer in layers])
                if type(dw) is not nn.Conv2d:  # a dilated conv with its sub-grid fast path: the same class
                    if k * C not in wide:
                        conv = create_conv2d(k * C, k * C, dw.kernel_size[0], dw.stride[0], dw.padding[0],
                                             dw.dilation[0], groups=k * C)
                        wide[k * C] = batched_subgrid_conv(conv) or conv
                    y = torch.func.functional_call(wide[k * C], {"weight": w}, (y,))
                else:
                    y = F.conv2d(y, w, None, dw.stride, dw.padding, dw.dilation, k * C)
                y = F.conv2d(y, torch.cat([layer[2].weight for layer in layers]), None, 1, 0, 1, k)
            y = _batch_norm(y, [layer[3] for layer in layers])
        return list(y.chunk(k, 1))
    return run


def depthwise_weight_grad_tiled(go: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int,
                                padding: int) -> torch.Tensor:
    """The weight gradient of an undilated depthwise KxK conv (K odd >= 5) from 3x3 weight gradients of the
    padded input's windows (oneDNN has a fast NHWC depthwise weight-gradient kernel for 3x3 only)."""
    C, K = weight.shape[0], weight.shape[-1]
    H, W = go.shape[-2:]
    xp = F.pad(x, (padding,) * 4)
    w3 = weight.new_empty(C, 1, 3, 3)
    rows = []
    for r in range(0, K - 1, 2):
        cols = []
        for c in range(0, K - 1, 2):
            window = xp[:, :, r:r + stride * (H - 1) + 3, c:c + stride * (W - 1) + 3]
            g = torch.ops.aten.convolution_backward(go, window, w3, None, [stride] * 2, [0, 0], [1, 1], False,
                                                    [0, 0], C, [False, True, False])[1]
            cols.append(g if c == 0 else g[..., 1:])
        row = torch.cat(cols, -1)
        rows.append(row if r == 0 else row[..., 1:, :])
    return torch.cat(rows, -2)


class TiledDepthwise(torch.autograd.Function):
    """conv2d(x, w, groups=C) whose weight gradient is :func:`depthwise_weight_grad_tiled`."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.geometry = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, go):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        gx = torch.ops.aten.convolution_backward(go, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False,
                                                 [0, 0], weight.shape[0], [True, False, False])[0] \
            if ctx.needs_input_grad[0] else None
        gw = depthwise_weight_grad_tiled(go, x, weight, stride, padding) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None


def depthwise(C: int, kernel: int, stride: int) -> tuple[Run, Run, list[nn.Module]]:
    conv = nn.Conv2d(C, C, kernel, stride, kernel // 2, groups=C, bias=False)
    return (lambda x: [conv(x)]), (lambda x: [TiledDepthwise.apply(x, conv.weight, stride, kernel // 2)]), [conv]


def pools(k: int, C: int, stride: int) -> tuple[Run, Run, list[nn.Module]]:
    """k edges' max_pool_3x3 + BN and avg_pool_3x3 + BN (as the supernet builds them) vs computed once and
    read by all k edges: parameter-free, and non-affine BN in training mode is the same function on each."""
    from nasseg.layers import CompactMaxPool2d
    maxes = [nn.Sequential(CompactMaxPool2d(3, stride, 1), nn.BatchNorm2d(C, affine=False)) for _ in range(k)]
    avgs = [nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False), nn.BatchNorm2d(C, affine=False))
            for _ in range(k)]

    def each(x):
        return [m(x) for m in maxes] + [a(x) for a in avgs]

    def shared(x):
        outs = [maxes[0](x)] * k + [avgs[0](x)] * k
        with torch.no_grad():
            for group in (maxes, avgs):
                for m in group[1:]:
                    m[1].load_state_dict(group[0][1].state_dict())
        return outs
    return each, shared, maxes + avgs


def dilated(C: int, kernel: int) -> tuple[Run, Run, list[nn.Module]]:
    """A stride-1 dilated depthwise conv: sub-grid views (fast path subgrid_dilated_conv) vs the sub-grids as
    one batch (fast path batched_subgrids, nasseg.supernet.depthwise)."""
    from nasseg.supernet.depthwise import subgrids_as_batch
    conv = create_conv2d(C, C, kernel, 1, kernel - 1, 2, groups=C)  # DilatedDepthwiseConv2d (sub-grid views)
    return (lambda x: [conv(x)]), (lambda x: [subgrids_as_batch(x, conv.weight, 2, kernel - 1)]), [conv]


def batch_norms(C: int) -> tuple[Run, Run, list[nn.Module]]:
    """One non-affine BatchNorm (training) in the input's layout vs on an NCHW / NHWC copy of it."""
    bn = nn.BatchNorm2d(C, affine=False)

    def other_layout(x):
        fmt = torch.contiguous_format if x.is_contiguous(memory_format=torch.channels_last) else torch.channels_last
        return [bn(x.contiguous(memory_format=fmt))]
    return (lambda x: [bn(x)]), other_layout, [bn]


class MixedSum(nn.Module):
    """sum_j w_j * y_j over an edge's computed ops (y_j stand-ins: x * (j + 1)): mul + add per term as
    MixedOp does, or one addcmul per term."""

    def __init__(self, terms: int, addcmul: bool):
        super().__init__()
        self.weights = nn.Parameter(torch.rand(terms))
        self.addcmul = addcmul

    def forward(self, x):
        w = self.weights
        out = w[0] * x
        for j in range(1, len(w)):
            out = torch.addcmul(out, w[j], x * (j + 1)) if self.addcmul else out + w[j] * (x * (j + 1))
        return out


def cases(C: int, edges: tuple[int, ...] = EDGES_READING_ONE_STATE["darts"]):
    """(case, {formulation: run}, the modules they use) at one stage's channel count; ``edges``: the k of
    the a. cases."""
    for kernel in (3, 5):
        for k in edges:
            mods = sep_convs(k, C, kernel, 1)
            yield (f"a. sep_conv_{kernel}x{kernel}, {k} edges", {
                "k calls": lambda x, mods=mods: [m(x) for m in mods],
                "one call (x cat k)": batched_blocks(mods, False),
                "one call (multiplier)": batched_blocks(mods, True)}, mods)
        mods = [m for m in sep_convs(edges[0], C, kernel, 1, dilation=2)]
        yield (f"a. dil_conv_{kernel}x{kernel}, {edges[0]} edges", {
            "k calls": lambda x, mods=mods: [m(x) for m in mods],
            "one call (x cat k)": batched_blocks(mods, False)}, mods)
    current, tiled, mods = depthwise(C, 5, 1)
    yield "c. depthwise 5x5 conv", {"native": current, "3x3-tiled weight grad": tiled}, mods
    for kernel in (3, 5):
        current, batched, mods = dilated(C, kernel)
        yield (f"c. dilated depthwise {kernel}x{kernel} conv, stride 1", {"sub-grid views": current,
                                                                          "sub-grids as one batch": batched}, mods)
    each, shared, mods = pools(4, C, 1)
    yield "c. max+avg pool + BN, 4 edges", {"each edge": each, "once, read by 4": shared}, mods
    current, other, mods = batch_norms(C)
    yield "c. BatchNorm (affine=False)", {"as is": current, "on a copy in the other layout": other}, mods
    mixed = MixedSum(7, False)

    def summed(x, addcmul):
        mixed.addcmul = addcmul
        return [mixed(x)]
    yield "c. mixed sum of 7 terms", {"mul + add": lambda x: summed(x, False), "addcmul": lambda x: summed(x, True)}, \
        [mixed]


def forward_backward(run: Run, x: torch.Tensor, params: list[torch.Tensor], grads: dict) -> Callable[[], None]:
    def call() -> None:
        x.grad = None
        for p in params:
            p.grad = None  # as a step's zero_grad(set_to_none=True)
        outs = run(x)
        for o in outs:  # one fixed output gradient per shape, drawn once
            if tuple(o.shape) not in grads:
                grads[tuple(o.shape)] = torch.randn_like(o)
        torch.autograd.backward(outs, [grads[tuple(o.shape)] for o in outs])
    return call


def timed_alternating(calls: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median CPU ms of each call (time.process_time: the machine is shared, wall time is not a measure),
    the calls taking turns (order rotating each round) after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(repeats + 1):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.process_time()
            calls[name]()
            if i:
                times[name].append(time.process_time() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def max_diff(runs: dict[str, Run], params: list[torch.Tensor], x: torch.Tensor, seed: int = 1) -> dict[str, float]:
    """float64 max abs difference of each run's outputs and gradients (x and ``params``) to the first run's."""
    results = {}
    for name, run in runs.items():
        for p in params:
            p.grad = None
        xx = x.detach().clone().requires_grad_()
        outs = run(xx)
        g = torch.Generator().manual_seed(seed)
        torch.autograd.backward(outs, [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs])
        results[name] = [o.detach().clone() for o in outs] + [xx.grad] + \
            [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    first = next(iter(results.values()))
    return {name: max((a - b).abs().max().item() for a, b in zip(first, r)) for name, r in results.items()}


def compile_case(C: int, px: int, fmt: torch.memory_format, repeats: int) -> None:
    """torch.compile (inductor) of one sep_conv_3x3 and of one MixedOp (7 computed ops): compile seconds
    (first forward + backward), then compiled vs eager, alternating; float64 difference from a float64 compile."""
    from nasseg.shell.bench.nets import bench_space
    from nasseg.supernet.mixed import MixedOp
    space = bench_space("darts_cifar", 16, 8, 10)
    ops = next(iter(space.cell_graph.edges(data=True)))[2]["ops"]
    weights = torch.softmax(torch.randn(len(ops), generator=torch.Generator().manual_seed(0)), 0)
    for label, module, call in (
            ("b. sep_conv_3x3", sep_convs(1, C, 3, 1)[0], lambda m, x: m(x)),
            ("b. MixedOp, 7 ops", MixedOp(space, ops, C, 1, False),
             lambda m, x: m(x, weights.to(x.dtype), F.relu(x)))):
        module.to(memory_format=fmt)
        params = list(module.parameters())
        x = torch.randn(64, C, px, px).contiguous(memory_format=fmt).requires_grad_()
        compiled = torch.compile(module)
        grads: dict = {}
        start = time.perf_counter()
        forward_backward(lambda x: [call(compiled, x)], x, params, grads)()
        seconds = time.perf_counter() - start
        ms = timed_alternating({"eager": forward_backward(lambda x: [call(module, x)], x, params, grads),
                                "compiled": forward_backward(lambda x: [call(compiled, x)], x, params, grads)},
                               repeats)
        module.double()
        compiled64 = torch.compile(module)
        x64 = torch.randn(4, C, px, px, dtype=torch.float64).contiguous(memory_format=fmt)
        diff = max_diff({"eager": lambda x: [call(module, x)], "compiled": lambda x: [call(compiled64, x)]},
                        params, x64)["compiled"]
        row(label, (64, C, px), fmt, "weights + input", ms["eager"], {f"compiled (compile {seconds:.0f} s)": (ms["compiled"],
                                                                                                    diff)})


def row(label: str, shape: tuple[int, int, int], fmt, mode: str, base: float,
        alternatives: dict[str, tuple[float, float]]) -> None:
    layout = "NHWC" if fmt == torch.channels_last else "NCHW"
    for name, (ms, diff) in alternatives.items():
        print(f"| {label} | {' x '.join(map(str, shape))}px | {layout} | {mode} | {base:.2f} | {name} | {ms:.2f} | {base / ms:.2f} | "
              f"{diff:.1e} |", flush=True)


def kernels(layouts: list[str], repeats: int, only: str | None, compile_too: bool, net: str = "darts") -> None:
    shapes = SHAPES[net]
    print(f"torch {torch.__version__}, 1 thread, {net} shapes, median CPU ms of {repeats} alternating repeats; "
          "float64 max abs diff of outputs and gradients at N=4")
    print("| case | N x C x size | layout | gradients | current ms | alternative | alt ms | current / alt | f64 diff |")
    print("|---|---|---|---|---:|---|---:|---:|---:|")
    for layout in layouts:
        fmt = LAYOUTS[layout]
        for N, C, px in shapes:
            if compile_too and (N, C, px) == SHAPES["darts"][0]:  # minutes per compile: the first stage only
                compile_case(C, px, fmt, repeats)
            for label, runs, mods in cases(C, EDGES_READING_ONE_STATE[net]):
                if only and not any(word in label for word in only.split(",")):
                    continue
                for m in mods:
                    m.to(memory_format=fmt)
                params = [p for m in mods for p in m.parameters()]
                x = torch.randn(N, C, px, px).contiguous(memory_format=fmt).requires_grad_()
                modes = ("weights + input", "input only") if label.startswith("a.") else ("weights + input",)
                for mode in modes:
                    for p in params:
                        p.requires_grad_(mode == "weights + input")
                    grads: dict = {}
                    ms = timed_alternating({name: forward_backward(run, x, params, grads)
                                            for name, run in runs.items()}, repeats)
                    for m in mods:
                        m.double()
                    x64 = torch.randn(4, C, px, px, dtype=torch.float64).contiguous(memory_format=fmt)
                    diffs = max_diff(runs, [p for p in params if p.requires_grad], x64)
                    for m in mods:
                        m.float()
                    first = next(iter(runs))
                    row(label, (N, C, px), fmt, mode, ms[first], {name: (ms[name], diffs[name]) for name in runs
                                                              if name != first})


STEP_NETS = {  # the nets of the peers suite: DARTS CIFAR (batch from --batch), Auto-DeepLab at 128x128, batch 2
    "darts": lambda batch: ("darts_cifar", 16, 8, 10, batch, (32, 32)),
    "autodeeplab": lambda batch: ("autodeeplab", 8, 12, 19, 2, (128, 128)),
}


def step(path: str, batch: int, repeats: int, net: str = "darts") -> None:
    """Search steps (architecture, then weights) with fast path ``path`` on and off, taking turns."""
    from nasseg import fastpaths
    from nasseg.heap import keep_freed_heap
    from nasseg.shell.bench.nets import NetConfig, Variant

    keep_freed_heap()
    config = NetConfig(*STEP_NETS[net](batch))
    variant = Variant(config, "ours", torch.device("cpu"))
    seconds: dict[bool, dict[str, list[float]]] = {on: collections.defaultdict(list) for on in (True, False)}
    for i in range(repeats + 1):
        for on in ((True, False) if i % 2 else (False, True)):
            with fastpaths.overridden(**{path: on}):
                for part, run in (("arch", variant.arch_step), ("weight", variant.weight_step)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    run()
                    if i:  # the first round warms up
                        seconds[on][f"{part} CPU"].append(time.process_time() - cpu)
                        seconds[on][f"{part} wall"].append(time.perf_counter() - wall)
    print(f"{path}, {config.space} C={config.width}, {config.layers} layers, batch {config.batch}, "
          f"{'x'.join(map(str, config.size))}, channels-last, 1 thread, median of {repeats}:")
    for part in seconds[True]:
        on, off = (statistics.median(seconds[flag][part]) for flag in (True, False))
        print(f"  {part}: on {on:.2f} s, off {off:.2f} s, on / off {on / off:.3f}  (on {seconds[True][part]}, "
              f"off {seconds[False][part]})")


# the fast paths that are autograd Functions or custom modules torch.compile would break its graph at, or that
# compute parts of a mixed op outside it (batched_edges); the compiled MixedOps run the native ops instead
# (inductor has its own compact max-pool indices)
NOT_COMPILED = ("compact_max_pool", "subgrid_dilated_conv", "batched_subgrids", "shared_pools", "batched_edges")


def compiled_mixed_ops(model: nn.Module) -> None:
    """Each MixedOp of ``model`` runs one torch.compile'd function of (x, alpha weights, relu(x)): every
    candidate op and the weighted sum, fused by inductor around oneDNN's convolutions."""
    import types

    from nasseg.supernet.mixed import MixedOp

    def plain(self, x, weights, relu_x):
        out = None
        for position, op, reads_relu in zip(self.positions, self.ops, self.reads_relu):
            if reads_relu and relu_x is None:
                relu_x = torch.relu(x)
            term = weights[position] * op(relu_x if reads_relu else x)
            out = term if out is None else out + term
        return out

    def forward(self, x, weights, relu_x=None, active=None, shared=None, precomputed=None):
        if active is not None or precomputed is not None:
            raise NotImplementedError("compiled MixedOp: pruned edges and batched_edges are not measured here")
        return self.compiled(x, weights, relu_x)

    for module in model.modules():
        if isinstance(module, MixedOp):
            module.compiled = torch.compile(types.MethodType(plain, module), dynamic=False)
            module.forward = types.MethodType(forward, module)


def compiled_step(batch: int, repeats: int) -> None:
    """Search steps (architecture, then weights) of the default supernet against compiled MixedOps, taking turns."""
    import torch._dynamo

    from nasseg import fastpaths
    from nasseg.heap import keep_freed_heap
    from nasseg.shell.bench import nets
    from nasseg.supernet import Supernet

    keep_freed_heap()
    config = nets.NetConfig("darts_cifar", 16, 8, 10, batch, (32, 32))
    eager = nets.Variant(config, "ours", torch.device("cpu"))
    # lean_saved off: its saved-tensor hooks break the graph; inductor's partitioner decides what is kept
    with mock.patch.object(nets, "build", lambda space, classes: Supernet(space, classes, lean_saved=False)):
        compiled = nets.Variant(config, "ours", torch.device("cpu"), source=eager.model)
    compiled_mixed_ops(compiled.model)

    def natively():
        return fastpaths.overridden(**{name: False for name in NOT_COMPILED})

    # every cell shape, stride and pass (weight step, architecture step) is a graph of its own
    with torch._dynamo.config.patch(cache_size_limit=64, accumulated_cache_size_limit=512):
        with natively():
            start = time.perf_counter()
            compiled.step()
            first = time.perf_counter() - start
        seconds: dict[str, dict[str, list[float]]] = {name: collections.defaultdict(list) for name in ("eager", "compiled")}
        for i in range(repeats + 1):
            for name in (("eager", "compiled") if i % 2 else ("compiled", "eager")):
                variant = eager if name == "eager" else compiled
                with natively() if name == "compiled" else contextlib.nullcontext():
                    for part, run in (("arch", variant.arch_step), ("weight", variant.weight_step)):
                        wall = time.perf_counter()
                        run()
                        if i:  # the first round warms up
                            seconds[name][part].append(time.perf_counter() - wall)
    print(f"DARTS C=16, 8 cells, batch {batch}, 32x32, channels-last, 1 thread; first compiled step (compiles): "
          f"{first:.1f} s; median wall seconds of {repeats}:")
    for part in ("arch", "weight"):
        e, c = (statistics.median(seconds[name][part]) for name in ("eager", "compiled"))
        print(f"  {part} step: default {e:.2f} s, compiled MixedOps {c:.2f} s, compiled / default {c / e:.3f}")
    e, c = (sum(statistics.median(seconds[name][p]) for p in ("arch", "weight")) for name in ("eager", "compiled"))
    print(f"  step: default {e:.2f} s, compiled MixedOps {c:.2f} s, compiled / default {c / e:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["profile", "kernels", "step", "compiled-step"])
    parser.add_argument("--path", default="batched_subgrids", help="step: the fast path switched on and off")
    parser.add_argument("--batch", type=int, default=16, help="profile, step, compiled-step: batch size")
    parser.add_argument("--net", choices=list(SHAPES), default="darts",
                        help="kernels: whose shapes; step: which net (autodeeplab: F=8, 12 layers, batch 2, 128x128)")
    parser.add_argument("--top", type=int, default=15, help="profile: rows of the aten-op table")
    parser.add_argument("--repeats", type=int, default=9, help="kernels, step, compiled-step: timed repeats of each formulation")
    parser.add_argument("--layout", choices=["nhwc", "nchw", "both"], default="both")
    parser.add_argument("--only", help="kernels: only the cases whose label contains one of these words (a,b,...)")
    parser.add_argument("--compile", action="store_true",
                        help="kernels: also torch.compile, at C=16, 32px (minutes per compile)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # torch.compile (--compile, compiled-step) writes its cache into a temporary folder, not /tmp/torchinductor_*:
    # each run pays its compiles, and nothing is left behind (inductor puts its precompiled headers under the
    # temporary directory of the process, whatever TORCHINDUCTOR_CACHE_DIR says: that is moved there too)
    with tempfile.TemporaryDirectory(prefix="nasseg-inductor-") as cache:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache)
        tempfile.tempdir = cache
        if args.what == "profile":
            profile(args.batch, args.top)
        elif args.what == "step":
            step(args.path, args.batch, args.repeats, args.net)
        elif args.what == "compiled-step":
            compiled_step(args.batch, args.repeats)
        else:
            kernels(list(LAYOUTS) if args.layout == "both" else [args.layout], args.repeats, args.only, args.compile,
                    args.net)


if __name__ == "__main__":
    main()
