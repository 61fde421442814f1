"""What ``nasseg info`` reports: parameters and multiply-adds of a space, an ArchSpec or a model.

Multiply-adds are counted on the ``meta`` device (no memory, no compute), so full-resolution
inputs are cheap to describe; a space's supernet is counted one distinct cell at a time
(nasseg.supernet.cost). With ``latency=True`` a model (or ArchSpec network) is also built with real
weights and timed: the median of a few forward passes (``median_latency``) on the GPU if there is
one, else on the CPU with torch's current thread count, both reported.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from nasseg import models, space as spaces
from nasseg.arch import is_arch_file
from nasseg.complexity import count_macs, count_params, median_latency, meta_device
from nasseg.config import did_you_mean, load_yaml
from nasseg.errors import NassegError
from nasseg.models.registry import MODELS, available_models
from nasseg.space.blocks import HEADS
from nasseg.supernet.cost import supernet_cost


def describe_space(space: spaces.SearchSpace, input_size: tuple[int, int] | None,
                   classes: int | None) -> dict[str, Any]:
    size = input_size or ((512, 512) if HEADS[space.network.head.type].segmentation else (32, 32))
    cost = supernet_cost(space, classes, size)
    return {"kind": "search space", "name": space.name, "file": space.file, "network": space.network.type,
            "cell_layers": space.network.layers, "states": space.network_graph.number_of_nodes() - 1,
            "strides": list(space.network.strides), "ops": list(space.op_names),
            "cell_edges": space.cell_graph.number_of_edges(), "input": f"{size[0]}x{size[1]}",
            "classes": cost.num_classes, "params": cost.params, "arch_params": cost.arch_params,
            "alphas": cost.alphas, "betas": cost.betas, "macs": cost.macs}


def describe_model(name_or_path: str, input_size: tuple[int, int] | None, classes: int | None,
                   latency: bool = False, latency_device: str | None = None) -> dict[str, Any]:
    builder_default = None
    if name_or_path in MODELS:  # e.g. darts_v2_cifar defaults to its 10 CIFAR classes
        builder_default = inspect.signature(MODELS[name_or_path]).parameters["num_classes"].default
    num_classes = classes or (builder_default if builder_default is not inspect.Parameter.empty else None) or 19
    with meta_device():
        model = models.build(name_or_path, num_classes)
        size = input_size or getattr(model, "default_input", (512, 1024))
        x = torch.zeros(1, 3, *size)
        macs = count_macs(lambda: model.eval()(x))
    report = {"kind": "model", "name": str(name_or_path), "input": f"{size[0]}x{size[1]}",
              "classes": num_classes, "params": count_params(model.parameters()), "arch_params": 0,
              "macs": macs}
    if latency:
        device = latency_device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = models.build(name_or_path, num_classes)
        report["latency_ms"] = round(median_latency(model, size, device=device) * 1e3, 2)
        report["latency_device"] = device
        if torch.device(device).type == "cpu":
            report["latency_threads"] = torch.get_num_threads()
    return report


def _no_latency_for_spaces(latency: bool, target: object) -> None:
    if latency:
        raise NassegError(f"{target}: --latency times a model or an ArchSpec, not a search space "
                          "(a supernet's speed depends on the architecture it will become)")


def describe_target(target: str, input_size: tuple[int, int] | None = None, classes: int | None = None,
                    latency: bool = False) -> dict[str, Any]:
    """Dispatch on what TARGET is: a YAML file (space or ArchSpec), a built-in space, a model name."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        data = load_yaml(path)
        if spaces.is_space_file(data):
            _no_latency_for_spaces(latency, path)
            return describe_space(spaces.load(path), input_size, classes)
        if is_arch_file(data):
            return describe_model(str(path), input_size, classes, latency)
        raise NassegError(f"{path}: neither a search space (keys cell, network) nor an ArchSpec "
                          "(key cells)")
    if target in spaces.builtin_spaces():
        _no_latency_for_spaces(latency, target)
        return describe_space(spaces.load(target), input_size, classes)
    names = available_models()
    if target in names:
        return describe_model(target, input_size, classes, latency)
    choices = spaces.builtin_spaces() + names
    raise NassegError(f"{target}: not a file, a built-in space or a model name; built-in spaces: "
                      f"{', '.join(spaces.builtin_spaces())}; models: {', '.join(names) or 'none'}"
                      + did_you_mean(target, choices))
