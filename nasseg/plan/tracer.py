"""Counting the bytes a computation keeps alive, without computing it: a dispatch mode over ``meta`` tensors.

Every tensor operation reaches :class:`MemoryTracer` below autograd, so it sees what a real run
allocates: the forward's outputs, what autograd saves for backward (the saved tensors keep their
storages alive), the gradients of the backward, an optimiser's state, the recomputation of an
activation-checkpointed block. It counts each new storage once and forgets it when the storage
dies (a weak reference on the storage), so ``current`` is the bytes alive now and ``peak`` the most
alive at any moment: the same figure as ``torch.cuda.max_memory_allocated`` on a GPU, at allocator
granularity when ``round_to`` is its block size.

Speed: torch computes the output shape of many ``meta`` operations with Python reference
implementations (0.1-0.4 ms each; a batch norm's takes milliseconds). A supernet repeats the same
operation on the same shapes thousands of times, so the output metadata of each (operation, input
metadata, arguments) is cached and later calls make empty ``meta`` tensors of that metadata
directly; in-place operations on ``meta`` tensors change nothing and return their first argument.

A ``meta`` tensor has no values: reading one as a Python number (``loss.item()``, ``bool(mask.all())``)
gives 0 / False here instead of an error. The training code traced by the planner reads numbers only
to log them or to catch rare cases (a crop of ignored pixels only), so it takes its usual path.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable

import torch
from torch._prims_common import suggest_memory_format
from torch.utils._python_dispatch import TorchDispatchMode

Spec = tuple[torch.Size, tuple[int, ...], torch.dtype, torch.device]
_FUNCTIONAL, _INPLACE, _OTHER = 0, 1, 2
_META = torch.device("meta")
_SCALAR_READ = torch.ops.aten._local_scalar_dense.default


def _placeholder(dtype: torch.dtype) -> bool | int | float:
    """The value a scalar read of a ``meta`` tensor gives (module docstring)."""
    if dtype == torch.bool:
        return False
    return 0.0 if dtype.is_floating_point or dtype.is_complex else 0


def _classify(func) -> int:
    """Functional (fresh outputs only), in place on its first argument (metadata unchanged), or other."""
    schema = func._schema
    returns = schema.returns
    if not func.is_view and all(r.alias_info is None for r in returns):
        return _FUNCTIONAL
    first = schema.arguments[0].alias_info if schema.arguments else None
    if (len(returns) == 1 and first is not None and first.is_write and returns[0].alias_info is not None
            and returns[0].alias_info.is_write and torch.Tag.inplace_view not in func.tags):
        return _INPLACE
    return _OTHER


def _key_part(values: tuple | list) -> tuple:
    """A hashable stand-in for operation arguments: tensors by their metadata, lists as tuples."""
    parts = []
    for value in values:
        if isinstance(value, torch.Tensor):
            parts.append(_spec(value))
        elif isinstance(value, (list, tuple)):
            parts.append(_key_part(value) if any(isinstance(v, torch.Tensor) for v in value) else tuple(value))
        else:
            parts.append(value)
    return tuple(parts)


def _spec(tensor: torch.Tensor | None) -> Spec | None:
    return None if tensor is None else (tensor.shape, tensor.stride(), tensor.dtype, tensor.device)


def _empty(spec: Spec | None) -> torch.Tensor | None:
    return None if spec is None else torch.empty_strided(spec[0], spec[1], dtype=spec[2], device=spec[3])


_CONVOLUTION = torch.ops.aten.convolution.default


def _conv_layout(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A ``meta`` convolution's output in the memory format the CPU and CUDA kernels give it: channels-last when
    the input or the weight is (torch's meta kernel leaves every output contiguous). Code that branches on a
    layout (edge_batch.grouped_pointwise) then takes the branch the device run takes."""
    if out.dim() == 4 and any(suggest_memory_format(t) == torch.channels_last for t in (x, weight)):
        return torch.empty_like(out, memory_format=torch.channels_last)
    return out


# per process: an operation's kind, and output metadata per (operation, input metadata, arguments)
_KINDS: dict[Any, int] = {}
_OUTPUTS: dict[Any, Any] = {}


class MemoryTracer(TorchDispatchMode):
    """Inside ``with tracer:`` every storage created is counted while it lives.

    ``track`` counts tensors made before (parameters, inputs, optimiser state) so that their
    release inside, e.g. gradients set to None, is seen too. A storage counts ``nbytes`` rounded up
    to ``round_to`` (the allocator's granularity) times ``byte_factor`` (an allocator's slack).
    ``node_bytes`` > 0 also counts host memory per autograd graph node of the pass being traced
    (what a CPU process spends on each recorded operation besides its tensors); the nodes of a
    pass are taken as freed when the next forward pass starts after a backward. ``current`` and
    ``peak`` are bytes; ``peak_tensors`` the tensors' part of the peak. Works on any device; the
    shortcuts apply to ``meta`` tensors only.
    """

    def __init__(self, round_to: int = 1, byte_factor: float = 1.0, node_bytes: int = 0) -> None:
        super().__init__()
        self.round_to, self.byte_factor, self.node_bytes = round_to, byte_factor, node_bytes
        self.tensor_bytes = self.nodes = self.peak = self.peak_tensors = 0
        self._in_backward = False
        self._live: dict[int, tuple[int, weakref.ref]] = {}

    @property
    def current(self) -> int:
        return self.tensor_bytes + self.node_bytes * self.nodes

    # --- accounting ---------------------------------------------------------------------------

    def track(self, tensors: Iterable[Any]) -> None:
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._count(tensor)

    def reset_peak(self) -> None:
        self.peak, self.peak_tensors = self.current, self.tensor_bytes

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live:
            return
        nbytes = -(-storage.nbytes() // self.round_to) * self.round_to
        if self.byte_factor != 1.0:
            nbytes = int(nbytes * self.byte_factor)
        self._live[key] = (nbytes, weakref.ref(storage, lambda _, key=key: self._release(key)))
        self.tensor_bytes += nbytes
        self._update_peak()

    def _update_peak(self) -> None:
        if self.current > self.peak:
            self.peak, self.peak_tensors = self.current, self.tensor_bytes

    def _release(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.tensor_bytes -= entry[0]

    def _count_node(self, args: tuple) -> None:
        """One graph node per operation recorded for autograd; none inside backward."""
        if torch._C._current_autograd_node() is not None:
            self._in_backward = True
            return
        if self._in_backward:  # forward again after a backward: that graph is gone
            self.nodes, self._in_backward = 0, False
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            self.nodes += 1
            self._update_peak()

    # --- dispatch -----------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.node_bytes:
            self._count_node(args)
        kind = _KINDS.get(func)
        if kind is None:
            kind = _KINDS[func] = _classify(func)
        if kind == _INPLACE and isinstance(args[0], torch.Tensor) and args[0].device == _META:
            return args[0]
        if func is _SCALAR_READ and args[0].device == _META:
            return _placeholder(args[0].dtype)
        if kind != _FUNCTIONAL:
            return func(*args, **kwargs)
        out = self._run_functional(func, args, kwargs)
        self.track(out if isinstance(out, (tuple, list)) else [out])
        return out

    def _run_functional(self, func, args: tuple, kwargs: dict) -> Any:
        """``func(*args, **kwargs)``, from the cached output metadata when these inputs were seen."""
        try:
            key = (func, _key_part(args), _key_part(tuple(kwargs.values())), tuple(kwargs))
            cached = _OUTPUTS.get(key)
        except TypeError:  # an argument that cannot be hashed: compute, do not cache
            return func(*args, **kwargs)
        if cached is not None:
            container, specs = cached
            if container is None:
                return _empty(specs[0])
            return container(_empty(spec) for spec in specs)
        out = func(*args, **kwargs)
        if func is _CONVOLUTION and out.device == _META:
            out = _conv_layout(out, args[0], args[1])
        if isinstance(out, torch.Tensor):
            if out.device == _META:
                _OUTPUTS[key] = (None, (_spec(out),))
        elif isinstance(out, (tuple, list)) and all(o is None or isinstance(o, torch.Tensor) and o.device == _META
                                                    for o in out):
            _OUTPUTS[key] = (type(out), tuple(_spec(o) for o in out))
        return out
