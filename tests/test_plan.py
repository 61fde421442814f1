"""The memory planner (nasseg.plan, nasseg plan): the tracer against measured CPU allocations, the
plans' scaling, and the refusal of nasseg search / train."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_DARTS_SPACE

from nasseg import fastpaths
from nasseg import plan as planner
from nasseg import layers
from nasseg.layers import to_channels_last
from nasseg.plan.simulation import SavedCounter
from nasseg.plan.tracer import MemoryTracer
from nasseg.search import load_job
from nasseg.search.steps import frozen
from nasseg.shell.cli.main import main
from nasseg.shell.cli.plan import parse_memory
from nasseg.space import load as load_space
from nasseg.supernet import Supernet

MB = 2**20


@pytest.fixture
def tiny_job(tmp_path):
    """A search job of the tiny DARTS space on the bundled CamVid images: plans in well under a second."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_DARTS_SPACE))
    job = {"name": "tiny", "space": "tiny.yaml", "device": "cpu", "epochs": 2,
           "data": {"dataset": "camvid_demo", "size": [48, 64], "crop": [32, 32], "batch_size": 2,
                    "val_batch_size": 2},
           "hessian": {"iters": 3}, "early_stop": {"rule": "none"}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_DARTS_SPACE))
    return load_space(str(path))


def tiny_supernet(space, device: str, checkpoint: bool = False) -> Supernet:
    torch.manual_seed(0)
    with torch.device(device):
        net = Supernet(space, 11, checkpoint_cells=checkpoint)
    return to_channels_last(net)


def traced_step(space, device: str, checkpoint: bool = False) -> tuple[int, int]:
    """(peak bytes above the start, bytes saved for backward) of a weight step's forward + backward
    of the tiny supernet, counted by the tracer on ``device`` (meta standing for the CPU, as the planner
    traces a CPU job)."""
    net = tiny_supernet(space, device, checkpoint)
    layers.forget_index_tables()  # each trace counts what a first step allocates
    x = torch.zeros(2, 3, 32, 32, device=device)
    y = torch.zeros(2, 32, 32, dtype=torch.int64, device=device)
    tracer = MemoryTracer()
    tracer.track([*net.parameters(), *net.buffers(), x, y])
    start = tracer.current
    saved = SavedCounter([*net.parameters(), *net.buffers(), x])
    with tracer, frozen(net.arch_parameters()), fastpaths.traced_as("cpu"):
        with saved.counting():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
    return tracer.peak - start, saved.bytes


def test_meta_trace_counts_what_a_cpu_step_saves_and_holds(tiny_space):
    """The same step on real CPU tensors and on meta tensors: the bytes saved for backward and the
    peak of live storages are equal to the byte."""
    cpu_peak, cpu_saved = traced_step(tiny_space, "cpu")
    meta_peak, meta_saved = traced_step(tiny_space, "meta")
    assert cpu_saved > 0 and meta_saved == cpu_saved
    assert meta_peak == cpu_peak


def test_meta_peak_equals_the_cpu_allocators_measured_peak(tiny_space):
    """torch's profiler records every allocation of the CPU allocator (kernels' own buffers too);
    the live peak it measures in a real step is the tracer's prediction on meta."""
    from torch.profiler import ProfilerActivity, profile

    net = tiny_supernet(tiny_space, "cpu")
    x, y = torch.zeros(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.int64)
    with frozen(net.arch_parameters()), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        F.cross_entropy(net(x), y).backward()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = measured = 0
    for _, nbytes in events:
        live += nbytes
        measured = max(measured, live)
    predicted, _ = traced_step(tiny_space, "meta")
    assert predicted == measured


def test_meta_trace_follows_the_cpu_layout_on_the_lattice(monkeypatch):
    """A channels-last conv's output is channels-last on the CPU, contiguous from torch's meta kernel; the
    tracer gives it the CPU's layout, so code that branches on the layout (batched_edges' pointwise convs as
    batched products, which keep nothing of their input when the weights are frozen) is traced as it runs: a
    lattice's architecture step saves and holds the same bytes on meta as on the CPU."""
    from nasseg.shell.bench.nets import bench_space
    from nasseg.supernet import edge_batch
    monkeypatch.setattr(edge_batch, "LEAN_MIN_ELEMENTS", 0)  # the side-by-side layers keep less, as on larger nets
    counted = {}
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        with torch.device(device):
            net = to_channels_last(Supernet(bench_space("autodeeplab", width=2, layers=3), 4))
        layers.forget_index_tables()  # each trace counts what a first step allocates
        x = torch.zeros(2, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.zeros(2, 32, 32, dtype=torch.int64, device=device)
        tracer, saved = MemoryTracer(), SavedCounter([*net.parameters(), *net.buffers(), x])
        tracer.track([*net.parameters(), *net.buffers(), x, y])
        start = tracer.current
        with tracer, frozen(net.weight_parameters()), fastpaths.traced_as("cpu"):
            with saved.counting():
                loss = F.cross_entropy(net(x), y)
            torch.autograd.grad(loss, net.arch_parameters())
        counted[device] = tracer.peak - start, saved.bytes
    assert counted["cpu"][1] > 0 and counted["meta"] == counted["cpu"]


def test_checkpointing_lowers_the_traced_peak(tiny_space):
    plain, _ = traced_step(tiny_space, "meta")
    checkpointed, _ = traced_step(tiny_space, "meta", checkpoint=True)
    assert checkpointed < 0.8 * plain


def test_a_scalar_read_of_a_meta_tensor_gives_zero_inside_the_tracer():
    with MemoryTracer():
        loss = torch.ones(3, device="meta").sum()
        assert loss.item() == 0.0 and bool((loss > 0).all()) is False


def test_search_plan_phases_and_components(tiny_job):
    plan = planner.plan_search(load_job(tiny_job), "cpu")
    assert [p.name for p in plan.phases] == ["architecture step", "weight step", "eigenvalue", "validation"]
    assert plan.peak == max(p.peak for p in plan.phases) and plan.peak_phase in {p.name for p in plan.phases}
    assert plan.state >= 2 * plan.weights  # gradients and SGD momentum (and the alphas' Adam moments)
    assert plan.saved > 0 and plan.inputs > 0
    first = planner.plan_search(load_job(tiny_job), "cpu", warm=False)
    assert [p.name for p in first.phases] == ["architecture step", "weight step"]


def test_overlap_plans_the_eigenvalue_beside_the_largest_step(tiny_job):
    plain = planner.plan_search(load_job(tiny_job), "cpu")
    overlapped = planner.plan_search(load_job(tiny_job, ["hessian.overlap=true"]), "cpu")
    assert [p.name for p in overlapped.phases] == ["architecture step", "weight step", "validation",
                                                   "eigenvalue beside the step"]
    peaks = {p.name: p.peak for p in plain.phases}
    largest = max(peaks["architecture step"], peaks["weight step"], peaks["validation"])
    own = peaks["eigenvalue"] - plain.runtime - plain.baseline - plain.state
    assert own > 0
    assert overlapped.peak == largest + own + plain.weights > plain.peak
    assert overlapped.peak_phase == "eigenvalue beside the step"


def test_a_plan_grows_linearly_with_the_batch(tiny_job):
    """What the largest-batch estimate assumes: each sample adds the same bytes to the peak."""
    config = load_job(tiny_job)
    two, four, six = (planner.plan_search(config, "cuda", batch=b, warm=False) for b in (2, 4, 6))
    assert abs((six.peak - four.peak) - (four.peak - two.peak)) < 0.02 * (four.peak - two.peak)
    assert 1.98 < four.saved / two.saved < 2.0  # per-channel BatchNorm statistics do not grow


def test_a_plan_does_not_depend_on_what_was_planned_before(tiny_job):
    """The compact max pool caches index tables per shape and device; each plan counts them as a fresh
    process's first step makes them, whatever an earlier trace left cached."""
    config = load_job(tiny_job)
    first, again = (planner.plan_search(config, "cuda") for _ in range(2))
    assert [p.peak for p in first.phases] == [p.peak for p in again.phases]


def test_checkpointing_lowers_the_search_step_but_not_the_eigenvalue(tiny_job):
    config = load_job(tiny_job)
    plain, checkpointed = (planner.plan_search(config, "cuda", checkpoint=c) for c in (False, True))
    peaks = [{p.name: p.peak for p in plan.phases} for plan in (plain, checkpointed)]
    assert peaks[1]["weight step"] < 0.8 * peaks[0]["weight step"]
    assert peaks[1]["architecture step"] < peaks[0]["architecture step"]
    assert peaks[1]["eigenvalue"] == peaks[0]["eigenvalue"]  # Search.eigenvalue runs without checkpointing


def test_second_order_and_exact_hessian_plans_hold_more(tiny_job):
    config = load_job(tiny_job)
    first = planner.plan_search(config, "cuda")
    second = planner.plan_search(load_job(tiny_job, ["order=second"]), "cuda")
    exact = planner.plan_search(load_job(tiny_job, ["hessian.method=exact"]), "cuda")

    def phase(plan, name):
        return next(p.peak for p in plan.phases if p.name == name)

    assert phase(second, "architecture step") > phase(first, "architecture step")
    assert phase(exact, "eigenvalue") > phase(first, "eigenvalue")


def test_cuda_rounds_to_blocks_and_cpu_adds_its_overheads(tiny_job):
    config = load_job(tiny_job)
    cpu, cuda = planner.plan_search(config, "cpu"), planner.plan_search(config, "cuda")
    assert cuda.runtime == 0 and cpu.runtime == planner.DEVICE_MODELS["cpu"].runtime_bytes
    assert cpu.peak > cuda.peak + cpu.runtime


def test_training_plan(tmp_path):
    from nasseg.train.config import load_train_job

    job = {"name": "mbv2", "model": "deeplabv3plus_mobilenetv2", "data": {"dataset": "camvid_demo",
           "size": [90, 120], "crop": [64, 64], "batch_size": 2}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(job))
    config = load_train_job(tmp_path / "train.yaml")
    plan = planner.plan_training(config, "cpu")
    assert [p.name for p in plan.phases] == ["training step", "validation"]
    assert plan.kind == "training" and plan.input_size == (64, 64)
    bigger = planner.plan_training(config, "cpu", batch=4)
    assert bigger.peak > plan.peak and 1.95 < bigger.saved / plan.saved <= 2


def test_largest_batch_is_confirmed_by_tracing(tiny_job):
    config = load_job(tiny_job)
    plan = planner.plan_search(config, "cuda")
    budget = plan.peak + 3 * (plan.peak - plan.fixed) // plan.batch  # room for ~3 more samples
    best = planner.largest_batch(config, "cuda", plan, budget, confirm=True)
    assert best >= plan.batch
    assert planner.plan_search(config, "cuda", batch=best).peak <= budget
    assert planner.plan_search(config, "cuda", batch=best + 1).peak > budget


def test_parse_memory():
    assert parse_memory("16GB") == 16 * 2**30 and parse_memory("512mb") == 512 * MB
    assert parse_memory("1.5G") == int(1.5 * 2**30) and parse_memory("1000") == 1000
    for bad in ("", "16XB", "-1GB", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_memory(bad)


def test_nasseg_plan_json(tiny_job, capsys):
    assert main(["plan", str(tiny_job), "--memory", "1GB", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is True and report["available"] == 2**30 and report["checkpoint_needed"] is False
    assert report["largest_batch"] >= 2 and report["plan"]["peak"] < 2**30


def test_nasseg_plan_text_when_it_does_not_fit(tiny_job, capsys):
    assert main(["plan", str(tiny_job), "--memory", "20MB"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "activation checkpointing: with supernet.checkpoint: true" in out
    assert "to fit:" in out


@pytest.fixture
def little_memory(monkeypatch):
    monkeypatch.setattr(planner, "available_memory", lambda device: planner.Available(10 * MB, "MemAvailable"))


def test_search_is_refused_up_front_with_one_line(little_memory, tmp_path, capsys, monkeypatch):
    import nasseg.shell.runner.inprocess as inprocess

    monkeypatch.setattr(inprocess, "run_in_process", lambda *a, **k: pytest.fail("the search ran"))
    assert main(["search", "jobs/demo.yaml", "--no-ray", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("nasseg: error: demo: a search step (batch 4 at 64x64 on cpu)")
    assert "predicted to need" in err and "only 10.0 MB is free (MemAvailable)" in err
    assert "a smaller data.crop" in err and "--force" in err
    # checkpointing does not lower the demo's peak on CPU (its heap churn), so it is not offered
    assert "supernet.checkpoint" not in err
    assert not any(tmp_path.iterdir())


def test_force_skips_the_check(little_memory, tmp_path, monkeypatch):
    import nasseg.shell.runner.inprocess as inprocess

    ran = []
    monkeypatch.setattr(planner, "refusal", lambda *a, **k: pytest.fail("planned despite --force"))
    monkeypatch.setattr(inprocess, "run_in_process", lambda *a, **k: ran.append(True))
    assert main(["search", "jobs/demo.yaml", "--no-ray", "--force", "--out", str(tmp_path)]) == 0
    assert ran == [True]


def test_training_is_refused_up_front(little_memory, tmp_path, capsys):
    code = main(["train", "deeplabv3plus_mobilenetv2", "--data", "camvid_demo", "--crop", "64x64",
                 "--batch-size", "2", "--iters", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "a training step (batch 2 at 64x64 on cpu)" in err
    assert "--force" in err and not any(tmp_path.iterdir())
