"""`nasseg bench` in --quick mode: real numbers come back, the straightforward baseline takes the
same optimisation steps as nasseg's search code, and the peers suite turns the side-by-side scripts'
JSON into rows."""

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

import nasseg
from nasseg.errors import NassegError
from nasseg.shell.bench import straightforward
from nasseg.shell.bench.nets import NetConfig, Variant
from nasseg.shell.bench.peers import run_script
from nasseg.shell.bench.run import run_bench
from nasseg.shell.bench.settings import Settings, parse_suites
from nasseg.shell.cli.main import main as nasseg_main


def main(argv):
    return nasseg_main(["bench", *argv])


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


def test_bad_input_is_one_clear_error(capsys, tmp_path):
    with pytest.raises(NassegError, match="unknown suite"):
        parse_suites("darts,speed")
    for argv, expected in [(["--suite", "speed"], "unknown suite speed"),
                           (["--suite", "peers", "--peer-dir", str(tmp_path / "nowhere")], "no such folder"),
                           (["--suite", "peers", "--peer-dir", str(tmp_path)], "no side_by_side_darts.py or"),
                           (["--suite", "hessian", "--job", "no_such_job"], "no such file or built-in job")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err


def test_default_hessian_job_ships_with_the_package():
    from nasseg.shell.bench.hessian import JOBS_DIR, resolve_job
    from nasseg.shell.bench.settings import DEFAULT_JOB

    assert resolve_job(DEFAULT_JOB) == JOBS_DIR / f"{DEFAULT_JOB}.yaml"
    assert JOBS_DIR.is_relative_to(Path(nasseg.__file__).parent)


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
    assert type(naive.model) is straightforward.StraightforwardSupernet


# Stand-ins for the side-by-side scripts: the same options (argparse refuses any other), the same
# JSON line last; DARTS first order meets its goals, second order misses its time goal. The suite times with
# --no-memory and runs the memory children (--child WHO) itself, after the timing process has exited.
FAKE_DARTS = """
    import argparse, json, sys
    p = argparse.ArgumentParser()
    for name in ("--iters", "--warmup", "--threads", "--batch", "--seed"):
        p.add_argument(name, type=int)
    p.add_argument("--order", choices=["first", "second"])
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--child")
    a = p.parse_args()
    if a.child:
        assert (a.batch, a.iters, a.warmup, a.threads, a.order is not None) == (2, 2, 0, 1, True), a
        print(json.dumps({"who": a.child, "peak_delta_mb": {"original": 100.0, "nasseg": 50.0}[a.child]}))
        sys.exit()
    assert (a.batch, a.iters, a.warmup, a.threads, a.no_memory) == (2, 1, 0, 1, True), a
    print("original step 0 4.00s", file=sys.stderr)
    nasseg = 1.0 if a.order == "first" else 3.0
    print(json.dumps({"order": a.order, "batch": a.batch, "params_original": 7, "params_nasseg": 7,
                      "step_s": {"original": 4.0 if a.order == "first" else 8.0, "nasseg": nasseg}}))
"""
FAKE_ADL = """
    import argparse, json, sys
    p = argparse.ArgumentParser()
    for name in ("--crop", "--iters", "--warmup", "--threads"):
        p.add_argument(name, type=int)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--child")
    a = p.parse_args()
    assert a.crop == 32, a
    if a.child == "nasseg_ckpt":
        sys.exit("out of memory")
    if a.child:
        print(json.dumps({"who": a.child, "peak_delta_mb": {"original": 400.0, "nasseg": 300.0}[a.child]}))
        sys.exit()
    assert a.no_memory, a
    print(json.dumps({"crop": a.crop, "step_s": {"original": 10.0, "nasseg": 5.0}}))
"""


def fake_peer_dir(folder):
    folder.mkdir()
    (folder / "side_by_side_darts.py").write_text(textwrap.dedent(FAKE_DARTS))
    (folder / "side_by_side_adl.py").write_text(textwrap.dedent(FAKE_ADL))
    return folder


def test_peers_suite_puts_the_scripts_figures_into_the_table(tmp_path, capsys):
    peers = fake_peer_dir(tmp_path / "peerbench")
    out = tmp_path / "bench.json"
    code = main(["--quick", "--suite", "peers", "--peer-dir", str(peers), "--repeats", "1", "--warmup", "0",
                 "--memory", "inprocess",  # nasseg's own memory rows (lean_saved) without two child processes
                 "--quiet", "--json", str(out), "--csv", str(tmp_path / "bench.csv")])
    assert code == 0
    assert "peers" in capsys.readouterr().out
    rows = {(r["config"], r["metric"]): r for r in json.loads(out.read_text())["rows"]}
    first = rows[("darts_cifar C=16 L=8 b2 32x32, 1st order", "step time")]
    assert (first["value"], first["baseline"], first["ratio"]) == (1.0, 4.0, 0.25)
    assert first["target"] == 0.25 and first["met"] is True
    second = rows[("darts_cifar C=16 L=8 b2 32x32, 2nd order (central difference)", "step time")]
    assert second["ratio"] == 0.375 and second["target"] == 0.3 and second["met"] is False
    memory = rows[("darts_cifar C=16 L=8 b2 32x32, 1st order", "peak memory")]
    assert memory["ratio"] == 0.5 and memory["met"] is True
    # nominal work of a first-order step: 2 passes x 3 x 0.300 GMAC an image (counted) x batch 2 x 2
    gflops = rows[("darts_cifar C=16 L=8 b2 32x32, 1st order", "achieved GFLOP/s")]
    assert "0.300 GMAC" in gflops["note"] and gflops["ratio"] == pytest.approx(4.0)
    assert gflops["value"] == pytest.approx(2 * 3 * 0.3003 * 2 * 2 / 1.0, rel=1e-3)
    adl = rows[("autodeeplab F=8 L=12 b2 32x32", "step time")]
    assert adl["ratio"] == 0.5 and adl["target"] == 0.4 and adl["met"] is False
    assert rows[("autodeeplab F=8 L=12 b2 32x32", "peak memory")]["ratio"] == 0.75
    ckpt_memory = rows[("autodeeplab F=8 L=12 b2 32x32", "peak memory, checkpoint")]
    assert ckpt_memory["ratio"] is None and ckpt_memory["note"].startswith("n/a")
    ckpt_time = [r for r in rows.values() if r["metric"] == "step time, checkpoint"]
    assert len(ckpt_time) == 1 and ckpt_time[0]["value"] > 0 and ckpt_time[0]["baseline"] > 0
    assert ckpt_time[0]["target"] == 1.3
    # the lattice with supernet.lean_saved: true, which the scripts do not run: measured here (--quick: on the
    # quick lattice, so against nasseg's default layers, not the original's figure for the script's lattice)
    lean_time = [r for r in rows.values() if r["metric"] == "step time, lean_saved: true"]
    assert len(lean_time) == 1 and lean_time[0]["value"] > 0 and lean_time[0]["baseline"] > 0
    lean_memory = [r for r in rows.values() if r["metric"] == "peak memory, lean_saved: true"]
    assert len(lean_memory) == 1 and lean_memory[0]["compare"] == "nasseg lean / nasseg"
    assert lean_memory[0]["value"] > 0 and lean_memory[0]["baseline"] > 0 and lean_memory[0]["target"] is None
    assert "achieved GFLOP/s" in (tmp_path / "bench.csv").read_text()


def test_a_failing_peer_script_reports_its_last_line(tmp_path):
    script = tmp_path / "side_by_side_adl.py"
    script.write_text("import sys\nprint('building', file=sys.stderr)\nraise RuntimeError('sizes do not match')\n")
    with pytest.raises(NassegError, match="failed \\(exit 1\\): RuntimeError: sizes do not match"):
        run_script(script, ["--crop", "224"], say=lambda line: None)


def test_paper_setting_eigen_share_is_the_eigenvalue_against_391_steps():
    from nasseg.shell.bench.hessian import PAPER_EPOCH_STEPS, paper_setting
    from nasseg.shell.bench.measure import Bench

    rows = paper_setting(Bench(Settings(quick=True, repeats=1, warmup=0, progress=False)))
    warm, cold = rows
    assert warm.metric == "eigen share, paper setting" and warm.target == 0.05 and warm.met in (True, False)
    step = float(warm.note.split(" x ")[1].split("s ")[0])  # the median step the epoch was built from
    for row in rows:
        assert row.value > 0
        assert math.isclose(row.baseline, PAPER_EPOCH_STEPS * step + row.value, rel_tol=0.01, abs_tol=0.01)
    assert "warm start" in warm.note and "cold start" in cold.note
