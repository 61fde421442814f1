"""Auto-DeepLab with Hessian early stopping: the dominant eigenvalue over alphas and betas jointly
(what the stop rule reads) and over each block alone (``hessian.blocks``) against the dense Hessian
in float64; the stop rule sees only epochs with architecture steps; the shipped jobs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from nasseg.layers import frozen_bn_stats
from nasseg.search import Search, load_job
from nasseg.search.hessian import exact_hessian

from test_search import TINY_LATTICE, write_job


def lattice_search(tmp_path, method: str, epsilon: float = 1e-4):
    """A tiny Auto-DeepLab search in float64 with alphas and betas away from uniform."""
    path = write_job(tmp_path, space=TINY_LATTICE, algorithm="autodeeplab", epochs=2,
                     hessian={"iters": 200, "tol": 1e-9, "method": method, "blocks": True, "batch_size": 2,
                              "epsilon": epsilon})
    torch.manual_seed(0)
    search = Search(load_job(path), 0, tmp_path / "run", progress=False)
    search.model.double().train()
    with torch.no_grad():
        for p in search.model.arch_parameters():
            p.normal_(0.0, 0.5)
    x, y = search.hessian_batch
    search.hessian_batch = (x.double(), y)
    return search


def dense(search) -> tuple[torch.Tensor, int]:
    """The dense Hessian of the Hessian batch's loss over all alphas then the betas, and the number
    of alphas (the size of the first block)."""
    x, y = search.hessian_batch
    alphas = list(search.model.alphas.values())
    with frozen_bn_stats(search.model):
        hessian = exact_hessian(lambda: search.loss(search.model, x, y), alphas + [search.model.betas])
    return hessian, sum(p.numel() for p in alphas)


def top(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(matrix)[-1])


@pytest.mark.parametrize("method, tolerance", [("exact", 1e-6), ("forward", 1e-3)])
def test_joint_and_block_eigenvalues_match_the_dense_hessian(tmp_path, method, tolerance):
    search = lattice_search(tmp_path, method, epsilon=1e-6)
    hessian, n_alphas = dense(search)
    assert torch.allclose(hessian, hessian.T, atol=1e-8)
    n_betas = hessian.shape[0] - n_alphas
    assert n_alphas == 20 and n_betas > 5  # one cell type (5 edges x 4 ops), the lattice's transitions
    expected = {"eigenvalue": top(hessian), "eigenvalue_alphas": top(hessian[:n_alphas, :n_alphas]),
                "eigenvalue_betas": top(hessian[n_alphas:, n_alphas:])}
    # a non-trivial case: the three values differ, the joint one above both blocks (interlacing)
    assert min(abs(v) for v in expected.values()) > 1e-4
    assert expected["eigenvalue"] > max(expected["eigenvalue_alphas"], expected["eigenvalue_betas"]) * (1 + 1e-3)
    got = {"eigenvalue": search.eigenvalue(), **search.block_eigenvalues()}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= tolerance * abs(value), (key, got[key], value)


def test_blocks_are_columns_of_metrics_only_when_asked(tmp_path):
    for blocks in (True, False):
        folder = tmp_path / str(blocks)
        folder.mkdir()
        path = write_job(folder, space=TINY_LATTICE, algorithm="autodeeplab", epochs=2,
                         hessian={"blocks": blocks})
        search = Search(load_job(path), 0, folder / "run", progress=False)
        assert search.config.arch.start_epoch == 1
        search.run_search()
        rows = list(csv.DictReader((folder / "run" / "metrics.csv").open()))
        assert [r["eigenvalue"] != "" for r in rows] == [False, True]  # warm-up epoch: nothing measured
        for key in ("eigenvalue_alphas", "eigenvalue_betas"):
            assert rows[0][key] == ""
            assert (rows[1][key] != "") == blocks
            if blocks:
                float(rows[1][key])
        steps = int(rows[1]["eigen_steps"])
        assert steps >= (3 * 2 if blocks else 2)  # joint + two blocks, each at least 2 products


def test_blocks_on_a_chain_space_add_nothing(tmp_path):
    path = write_job(tmp_path, epochs=1, hessian={"blocks": True})
    search = Search(load_job(path), 0, tmp_path / "run", progress=False)
    assert search.model.betas is None and search.block_eigenvalues() == {}


def test_stop_rule_windows_hold_only_epochs_with_architecture_steps(tmp_path, monkeypatch):
    """Warm-up epochs (no architecture step) get no eigenvalue and are not in the rule's windows:
    with start_epoch 3 and window 2 the first check is at epoch 3 + 2 * 2 = 7."""
    path = write_job(tmp_path, space=TINY_LATTICE, algorithm="autodeeplab", epochs=8, arch={"start_epoch": 3},
                     early_stop={"rule": "paper", "window": 2, "ratio": 0.75})
    measured = []
    values = iter([1.0, 1.0, 2.0, 4.0, 8.0])

    def eigenvalue(self, model=None):
        measured.append(self.epoch)  # the eigenvalue of the state after epoch e is taken with self.epoch == e
        return next(values)

    monkeypatch.setattr(Search, "eigenvalue", eigenvalue)
    search = Search(load_job(path), 0, tmp_path / "run", progress=False)
    checks = []
    result = search.run_search(on_epoch=lambda row: checks.append(search.stop_check(row["epoch"], row["eigenvalue"])))
    assert measured == [4, 5, 6, 7]
    # epochs 4-5 vs 6-7: mean(1, 1) / mean(2, 4) = 1/3 < 0.75 at epoch 7 -> return epoch 5
    assert (result.status, result.epochs_run, result.arch_epoch) == ("stopped", 7, 5)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["eigenvalue"] for r in rows[:3]] == ["", "", ""]
    assert [r["arch_active"] for r in rows] == ["False"] * 3 + ["True"] * 4
    assert [c[0] for c in checks] == ["continue"] * 6 + ["stop"]
    assert "waiting for 4 eigenvalues, have 3" in checks[5][2]  # epoch 6: epochs 4-6 only
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "early_stop" and events[-1]["return_epoch"] == 5


@pytest.mark.parametrize("name", ["camvid_autodeeplab", "camvid_autodeeplab_cpu"])
def test_autodeeplab_jobs_stop_on_the_joint_eigenvalue(name):
    """The shipped CamVid Auto-DeepLab jobs run the paper rule with room for checks after the
    warm-up and record the per-block eigenvalues."""
    config = load_job(Path(__file__).resolve().parents[1] / "jobs" / f"{name}.yaml")
    assert config.algorithm == "autodeeplab" and config.early_stop.rule == "paper"
    assert config.hessian.every == 1 and config.hessian.blocks
    arch_epochs = config.epochs - config.arch.start_epoch
    assert arch_epochs >= 2 * config.early_stop.window + 2  # at least 3 checks


def test_resumed_autodeeplab_search_records_the_same_block_eigenvalues(tmp_path):
    """The block runs start from the joint eigenvector, which the checkpoint keeps: a search
    interrupted after an epoch with eigenvalues and resumed records the same values."""
    path = write_job(tmp_path, space=TINY_LATTICE, algorithm="autodeeplab", epochs=3, arch={"start_epoch": 1},
                     hessian={"blocks": True})
    config = load_job(path)
    Search(config, 0, tmp_path / "a", progress=False).run_search()
    assert Search(config, 0, tmp_path / "b", progress=False).run_search(max_epochs=2).status == "interrupted"
    resumed = Search(config, 0, tmp_path / "b", progress=False)
    resumed.resume()
    resumed.run_search()
    columns = ("epoch", "eigenvalue", "eigenvalue_alphas", "eigenvalue_betas", "eigen_steps", "val_loss")
    a, b = ([{k: r[k] for k in columns} for r in csv.DictReader((tmp_path / run / "metrics.csv").open())]
            for run in ("a", "b"))
    assert a == b and a[2]["eigenvalue_betas"] != ""
