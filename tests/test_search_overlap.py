"""hessian.overlap: epoch e's eigenvalue on a thread of its own while epoch e+1 trains gives the
sequential search's numbers, stops where it stops, and resumes a checkpoint saved before its eigenvalue."""

import csv
import json
import shutil

import pytest
import torch

from nasseg.errors import NassegError, SpecError
from nasseg.search import Search, load_job
from nasseg.shell.runner.ray_session import torch_threads
from test_search import TINY_LATTICE, TINY_SPACE, alphas_of, write_job

TIMES = ("epoch_seconds", "eval_seconds", "eigen_seconds", "eigen_wait_seconds")


def metrics(run_dir):
    return [{k: v for k, v in row.items() if k not in TIMES} for row in csv.DictReader((run_dir / "metrics.csv").open())]


def run_both(tmp_path, **job):
    """The same job sequential (a) and overlapped (b); (Search a, Search b)."""
    path = write_job(tmp_path, **job)
    runs = []
    for name, overlap in (("a", False), ("b", True)):
        search = Search(load_job(path, [f"hessian.overlap={str(overlap).lower()}"]), 0, tmp_path / name, progress=False)
        runs.append((search, search.run_search()))
    return runs


def assert_same_search(tmp_path):
    a, b = alphas_of(tmp_path / "a"), alphas_of(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = metrics(tmp_path / "a")
    assert rows == metrics(tmp_path / "b")
    assert all(row["eigenvalue"] != "" for row in rows[1:])  # the overlapped eigenvalues are in the table
    for epoch in range(1, len(rows) + 1):
        name = f"epoch_{epoch:03d}.yaml"
        assert (tmp_path / "a" / "arch" / name).read_text() == (tmp_path / "b" / "arch" / name).read_text()


def test_overlap_gives_the_sequential_numbers_on_a_chain(tmp_path):
    (_, a), (search, b) = run_both(tmp_path, epochs=3, hessian={"iters": 6})
    assert (a.status, a.epochs_run) == (b.status, b.epochs_run) == ("finished", 3)
    assert_same_search(tmp_path)
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    # the eigenvalue ran beside the next epoch: only the last epoch waits for all of it
    assert float(rows[-1]["eigen_wait_seconds"]) > 0.5 * float(rows[-1]["eigen_seconds"]) > 0
    # the search ended at the last epoch: its checkpoint was rewritten with the complete row
    last = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["history"][-1]
    assert "eigen_pending" not in last and last["eigenvalue"] == float(rows[-1]["eigenvalue"])


def test_overlap_gives_the_sequential_numbers_on_a_lattice_with_blocks(tmp_path):
    """Auto-DeepLab's batched transitions set per-thread BatchNorm groups: the eigen thread's must not leak."""
    run_both(tmp_path, space=TINY_LATTICE, algorithm="autodeeplab", epochs=2, arch={"start_epoch": 0},
             hessian={"iters": 4, "blocks": True})
    assert_same_search(tmp_path)
    assert metrics(tmp_path / "a")[-1]["eigenvalue_betas"] != ""


def test_overlap_stops_where_the_sequential_search_stops(tmp_path, monkeypatch):
    values = {"a": iter([1.0, 1.0, 2.0, 4.0, 8.0, 16.0]), "b": iter([1.0, 1.0, 2.0, 4.0, 8.0, 16.0])}
    monkeypatch.setattr(Search, "eigenvalue", lambda self, model=None: next(values[self.run.path.name]))
    (_, a), (_, b) = run_both(tmp_path, epochs=6, early_stop={"rule": "paper", "window": 2, "ratio": 0.75})
    assert (a.status, a.epochs_run, a.arch_epoch) == (b.status, b.epochs_run, b.arch_epoch) == ("stopped", 4, 2)
    assert [r["epoch"] for r in metrics(tmp_path / "b")] == ["1", "2", "3", "4"]
    # epoch 5 trained beside epoch 4's eigenvalue and was dropped: nothing of it was recorded
    assert not (tmp_path / "b" / "arch" / "epoch_005.yaml").exists()
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 4 and state["history"][-1]["eigenvalue"] == 4.0
    assert "eigen_pending" not in state["history"][-1]
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert (result["status"], result["arch_epoch"]) == ("stopped", 2)


def test_overlap_resumes_an_epoch_saved_before_its_eigenvalue(tmp_path):
    path = write_job(tmp_path, epochs=3, hessian={"iters": 6})
    config = load_job(path, ["hessian.overlap=true"])
    Search(config, 0, tmp_path / "a", progress=False).run_search()
    interrupted = Search(config, 0, tmp_path / "b", progress=False)

    def crash(row):  # epoch 1 is reported after epoch 2 trained, before epoch 2 is saved
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.run_search(on_epoch=crash)
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["history"][-1]["eigen_pending"]  # what a crash there leaves
    for overlap in (True, False):  # the resumed job may have overlap switched off
        folder = tmp_path / f"b{overlap}"
        shutil.copytree(tmp_path / "b", folder)
        resumed = Search(load_job(path, [f"hessian.overlap={str(overlap).lower()}"]), 0, folder, progress=False)
        resumed.resume()
        assert resumed.run_search().status == "finished"
        a, b = alphas_of(tmp_path / "a"), alphas_of(folder)
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert metrics(folder) == metrics(tmp_path / "a")


def test_overlap_refuses_darts_ada_and_the_noise_op(tmp_path):
    with pytest.raises(SpecError, match=r"hessian.overlap: DARTS-ADA rolls back to saved epochs"):
        load_job(write_job(tmp_path, early_stop={"rule": "paper", "ada": {"factor": 10}}), ["hessian.overlap=true"])
    noisy = {**TINY_SPACE, "name": "noisy", "ops": [*TINY_SPACE["ops"], "noise"]}
    config = load_job(write_job(tmp_path, space=noisy), ["hessian.overlap=true"])
    with pytest.raises(NassegError, match=r"hessian.overlap with the noise op"):
        Search(config, 0, tmp_path / "run", progress=False)


@pytest.mark.parametrize("cpus, overlap, threads", [(1, False, 1), (4, False, 4), (1, True, 1), (2, True, 1),
                                                    (5, True, 2)])
def test_overlap_halves_a_trials_torch_threads(tmp_path, cpus, overlap, threads):
    config = load_job(write_job(tmp_path), [f"resources.cpus={cpus}", f"hessian.overlap={str(overlap).lower()}"])
    assert torch_threads(config.resources, config.hessian.overlap) == threads
