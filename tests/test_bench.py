"""`nasseg bench` in --quick mode: real numbers come back, and the straightforward baseline takes the
same optimisation steps as nasseg's search code."""

import json
import math

import pytest
import torch

from nasseg.shell.bench.suites import NetConfig, Settings, Variant, load_straightforward, parse_suites, run_bench
from nasseg.shell.cli.main import main as nasseg_main


def main(argv):
    return nasseg_main(["bench", *argv])
from nasseg.errors import NassegError

TINY_DARTS = NetConfig("darts_cifar", 2, 3, 10, 2, (8, 8))


def test_quick_run_measures_time_memory_and_ratios():
    settings = Settings(suites=("darts", "order"), quick=True, repeats=1, warmup=0, progress=False)
    rows = run_bench(settings)
    by_key = {}
    for r in rows:  # the first row of each metric is the suite's main comparison
        by_key.setdefault((r.suite, r.metric), r)
    for key in [("darts", "step time"), ("darts", "peak memory"), ("darts", "saved for backward"),
                ("order", "step time")]:
        row = by_key[key]
        assert row.value > 0 and row.baseline > 0, key
        assert math.isfinite(row.ratio) and row.ratio > 0, key
        assert row.target is not None and row.met in (True, False), key
    assert by_key[("darts", "weight step time")].value > 0
    nchw = [r for r in rows if r.suite == "darts" and r.metric == "step time" and "NCHW" in r.compare]
    assert len(nchw) == 1 and nchw[0].value > 0 and nchw[0].baseline == by_key[("darts", "step time")].baseline
    # second order does strictly more work than first order
    assert by_key[("order", "arch step time")].ratio > 1


def test_cli_writes_json_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["--quick", "--suite", "order", "--repeats", "1", "--warmup", "0", "--memory", "off", "--quiet",
                 "--json", str(out), "--csv", str(tmp_path / "bench.csv"), "--plot", str(tmp_path / "bench.png")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2nd / 1st order" in printed and "target" in printed
    payload = json.loads(out.read_text())
    assert payload["settings"]["threads"] == 1 and payload["rows"][0]["ratio"] > 0
    assert (tmp_path / "bench.csv").read_text().startswith("suite,")
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bad_suite_is_one_clear_error(capsys):
    with pytest.raises(NassegError, match="unknown suite"):
        parse_suites("darts,speed")
    assert main(["--suite", "speed"]) == 2
    assert "unknown suite speed" in capsys.readouterr().err


def test_straightforward_steps_match_ours():
    """One SGD weight step and one first-order Adam architecture step from the same state give the
    same weights and alphas in both implementations (ours in NCHW like the straightforward one: the
    channels-last rounding differences are test_supernet_perf's business)."""
    torch.set_num_threads(1)
    ours = Variant(TINY_DARTS, "ours_nchw", torch.device("cpu"))
    naive = Variant(TINY_DARTS, "straightforward", torch.device("cpu"), source=ours.model)
    assert torch.equal(ours.xa, naive.xa) and torch.equal(ours.ya, naive.ya)
    pairs = naive.model.paired_names(ours.model)
    ours_params, naive_params = dict(ours.model.named_parameters()), dict(naive.model.named_parameters())
    params = [(ours_params[a], naive_params[b]) for a, b in pairs if a in ours_params]
    for _ in range(2):  # the second step also exercises the momentum buffers
        loss_ours, loss_naive = ours.weight_step(), naive.weight_step()
        assert loss_ours == pytest.approx(loss_naive, rel=1e-5)
        for p, q in params:
            torch.testing.assert_close(q.detach().reshape(p.shape), p.detach(), rtol=1e-4, atol=1e-5)
    ours.arch_step()
    naive.arch_step()
    for p, q in zip(ours.model.arch_parameters(), naive.model.arch_parameters()):
        torch.testing.assert_close(q.detach().reshape(p.shape), p.detach(), rtol=1e-4, atol=1e-6)
    assert load_straightforward().StraightforwardSupernet is type(naive.model)
