"""nasseg.fastpaths: every fast path listed, gated by device and torch version, switchable in code and
by NASSEG_FASTPATHS; switched off, each layer runs the native op with the same numbers."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from nasseg import fastpaths
from nasseg.layers import (CompactMaxPool2d, DilatedDepthwiseConv2d, SubsampledPointwiseConv2d, compact_max_pool,
                           create_conv2d, replace_modules, to_channels_last)


@pytest.fixture(autouse=True)
def fresh_switches(monkeypatch):
    monkeypatch.delenv(fastpaths.ENV, raising=False)
    fastpaths.reset()
    yield
    fastpaths.reset()


class ConvCalls(TorchFunctionMode):
    """Records (input size, stride, dilation) of every 2-d conv call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.conv2d:
            stride, dilation = (tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in (args[3], args[5]))
            self.calls.append((tuple(args[0].shape[-2:]), stride, dilation))
        return func(*args, **(kwargs or {}))


def outputs_and_gradients(module, x):
    out = module(x)
    return [out, *torch.autograd.grad(out, [x, *module.parameters()], torch.ones_like(out))]


def test_every_fast_path_is_listed_with_whether_it_runs_and_why():
    listed = fastpaths.describe("cpu")
    assert [s.name for s in listed] == list(fastpaths.FAST_PATHS) == \
        ["compact_max_pool", "subgrid_dilated_conv", "subsampled_pointwise_conv", "batched_transitions",
         "batched_subgrids", "shared_pools", "batched_edges", "lean_saved"]
    assert all(s.enabled == (s.name != "compact_max_pool") and s.reason.startswith("default o") for s in listed)
    assert all(path.what and path.why for path in fastpaths.FAST_PATHS.values())
    on_cuda = {s.name: s for s in fastpaths.describe(torch.device("cuda", 0))}
    assert on_cuda["compact_max_pool"].enabled and not on_cuda["subgrid_dilated_conv"].enabled
    assert not on_cuda["lean_saved"].enabled and not on_cuda["batched_edges"].enabled  # measured on the CPU only
    assert on_cuda["subsampled_pointwise_conv"].reason.startswith("default off on cuda")
    assert "cpu, torch >=2.13,<2.14" in on_cuda["subsampled_pointwise_conv"].reason


def test_paths_are_on_only_for_their_devices_and_torch_versions():
    workaround = fastpaths.FAST_PATHS["subsampled_pointwise_conv"]
    assert workaround.applies("cpu", "2.13.0+cpu") and workaround.applies("cpu", "2.13.1")
    assert not workaround.applies("cpu", "2.12.1") and not workaround.applies("cpu", "2.14.0")
    assert not workaround.applies("cuda", "2.13.0")
    kernel = fastpaths.FAST_PATHS["subgrid_dilated_conv"]
    assert kernel.applies("cpu", "2.15.0") and not kernel.applies("cpu", "2.12.0") and not kernel.applies("mps")
    assert fastpaths.FAST_PATHS["compact_max_pool"].applies("cuda", "1.0")
    assert fastpaths.enabled("subsampled_pointwise_conv", "cpu") and fastpaths.enabled("subgrid_dilated_conv", "cpu")
    assert not fastpaths.enabled("subsampled_pointwise_conv", torch.device("cuda", 1))
    assert not fastpaths.enabled("subgrid_dilated_conv", "cuda:0")
    with pytest.raises(ValueError, match="unknown fast path 'fused_pool'"):
        fastpaths.enabled("fused_pool", "cpu")


def test_switches_in_code_win_over_the_environment_and_are_restored(monkeypatch):
    monkeypatch.setenv(fastpaths.ENV, "-compact_max_pool")
    fastpaths.reset()
    assert not fastpaths.enabled("compact_max_pool", "cuda")  # on there by default
    with fastpaths.overridden(compact_max_pool=True, subgrid_dilated_conv=False):
        assert fastpaths.enabled("compact_max_pool", "cpu") and not fastpaths.enabled("subgrid_dilated_conv", "cpu")
        assert fastpaths.describe()[0].reason == "set in code"
        fastpaths.set_enabled("subsampled_pointwise_conv", True)  # outside its device range: forced on
        assert fastpaths.enabled("subsampled_pointwise_conv", "cuda")
        fastpaths.set_enabled("subsampled_pointwise_conv", None)
        assert not fastpaths.enabled("subsampled_pointwise_conv", "cuda")
    assert not fastpaths.enabled("compact_max_pool", "cuda") and fastpaths.enabled("subgrid_dilated_conv", "cpu")
    with pytest.raises(ValueError, match="unknown fast path"), fastpaths.overridden(compact_max_pools=False):
        pass


def test_the_environment_variable_switches_paths(monkeypatch):
    monkeypatch.setenv(fastpaths.ENV, " -subgrid_dilated_conv, +subsampled_pointwise_conv ")
    fastpaths.reset()
    assert not fastpaths.enabled("subgrid_dilated_conv", "cpu") and fastpaths.enabled("batched_edges", "cpu")
    assert fastpaths.enabled("subsampled_pointwise_conv", "cuda")  # '+': forced on outside its range
    states = {s.name: s for s in fastpaths.describe()}
    assert states["subgrid_dilated_conv"].reason == f"set by {fastpaths.ENV}"
    monkeypatch.setenv(fastpaths.ENV, "-all,compact_max_pool")
    fastpaths.reset()
    assert [s.enabled for s in fastpaths.describe()] == [True, False, False, False, False, False, False, False]
    monkeypatch.setenv(fastpaths.ENV, "-compact_maxpool")
    fastpaths.reset()
    with pytest.raises(ValueError, match="NASSEG_FASTPATHS=.*unknown fast path 'compact_maxpool'"):
        fastpaths.enabled("compact_max_pool", "cpu")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_subsampled_pointwise_conv_switched_off_is_the_strided_conv(layout):
    torch.manual_seed(0)
    conv = create_conv2d(5, 6, 1, stride=2, bias=True).double()
    assert type(conv) is SubsampledPointwiseConv2d
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    results = {}
    for on in (True, False):
        with fastpaths.overridden(subsampled_pointwise_conv=on), ConvCalls() as probe:
            results[on] = outputs_and_gradients(conv, x)
        assert probe.calls == ([((5, 4), (1, 1), (1, 1))] if on else [((9, 8), (2, 2), (1, 1))])
    assert all(torch.equal(a, b) for a, b in zip(results[True], results[False]))


def test_subgrid_dilated_conv_switched_off_is_the_native_conv():
    torch.manual_seed(0)
    conv = create_conv2d(4, 4, 3, stride=1, padding=2, dilation=2, groups=4).double()
    assert type(conv) is DilatedDepthwiseConv2d
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    results = {}
    for on in (True, False):
        with fastpaths.overridden(subgrid_dilated_conv=on), ConvCalls() as probe:
            results[on] = outputs_and_gradients(conv, x)
        assert probe.calls == ([((4, 4), (1, 1), (1, 1))] * 4 if on else [((8, 8), (1, 1), (2, 2))])
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(results[True], results[False]))


def test_compact_max_pool_switched_off_keeps_torch_indices():
    torch.manual_seed(0)
    pool = CompactMaxPool2d(3, 1, 1)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    results, saved = {}, {}
    for on in (True, False):
        kept = []
        with fastpaths.overridden(compact_max_pool=on), \
                torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.dtype) or t, lambda t: t):
            results[on] = outputs_and_gradients(pool, x)
        saved[on] = kept
    assert saved == {True: [torch.int8], False: [torch.float64, torch.int64]}  # native: input and indices
    assert all(torch.equal(a, b) for a, b in zip(results[True], results[False]))


def test_create_conv2d_picks_the_class_and_keeps_nn_conv2d_state_dicts():
    cases = [((4, 4, 3, 1, 2, 2, 4), DilatedDepthwiseConv2d), ((4, 4, 3, 1, 1, 1, 4), nn.Conv2d),
             ((4, 8, 3, 1, 2, 2, 1), nn.Conv2d), ((4, 8, 1, 2, 0, 1, 1), SubsampledPointwiseConv2d),
             ((4, 8, 1, 2, 1, 1, 1), nn.Conv2d), ((4, 8, 1, 1, 0, 1, 1), nn.Conv2d)]
    for (c_in, c_out, kernel, stride, padding, dilation, groups), cls in cases:
        conv = create_conv2d(c_in, c_out, kernel, stride, padding, dilation, groups)
        native = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=False)
        assert type(conv) is cls and conv.state_dict().keys() == native.state_dict().keys()
        conv.load_state_dict(native.state_dict())


def test_modules_built_elsewhere_are_rebuilt_with_the_same_parameters():
    """to_channels_last rebuilds plain convs (a baseline's, a user-registered op's) as create_conv2d
    would build them, sharing the Parameters and drawing no random numbers; the supernet makes its
    candidates' max pools compact the same way."""
    model = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2,
                                                                                groups=8)), nn.Conv2d(8, 8, 3))
    params = [id(p) for p in model.parameters()]
    state = torch.random.get_rng_state()
    model = to_channels_last(model)
    assert torch.equal(state, torch.random.get_rng_state()) and [id(p) for p in model.parameters()] == params
    assert [type(m) for m in (model[0], model[1][0], model[2])] == \
        [SubsampledPointwiseConv2d, DilatedDepthwiseConv2d, nn.Conv2d]
    pool = replace_modules(nn.MaxPool2d(3, 2, 1), compact_max_pool)
    assert type(pool) is CompactMaxPool2d and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    assert compact_max_pool(nn.MaxPool2d(3, 2, 1, ceil_mode=True)) is None
    assert compact_max_pool(nn.MaxPool2d(13)) is None and compact_max_pool(pool) is None


def test_info_lists_the_fast_paths_and_their_state(capsys, monkeypatch):
    from nasseg.shell.cli.main import main

    with fastpaths.overridden(compact_max_pool=False):
        assert main(["info", "--list", "fastpaths"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert lines["compact_max_pool"] == "off" and set(lines) == {s.name for s in fastpaths.describe("cpu")}
    assert main(["info", "--list", "ops", "--json"]) == 0
    assert "sep_conv_3x3" in {entry["name"] for entry in json.loads(capsys.readouterr().out)}


def test_meta_tensors_take_the_paths_of_the_device_they_stand_for():
    """The memory planner traces on meta tensors: inside traced_as they follow the planned device's paths."""
    fastpaths.reset()
    assert not fastpaths.enabled("subgrid_dilated_conv", "meta")  # meta alone: only every-device paths
    with fastpaths.traced_as("cpu"):
        assert fastpaths.enabled("subgrid_dilated_conv", "meta")
    with fastpaths.traced_as("cuda:0"):
        assert not fastpaths.enabled("subgrid_dilated_conv", "meta")
        assert fastpaths.enabled("batched_transitions", torch.device("meta"))
    assert not fastpaths.enabled("subgrid_dilated_conv", "meta")
