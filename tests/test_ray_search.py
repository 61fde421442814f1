"""Searches as Ray Tune trials on a real local Ray: same alphas as in-process runs, a killed worker
and a killed driver resume from their epoch checkpoints, resources are checked up front, Optuna
HPO with ASHA, and `nasseg results`. Every test leaves Ray shut down."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
import yaml
from ray import tune

from nasseg.errors import NassegError, SpecError
from nasseg.shell.cli.main import main as runner_main  # the nasseg command line, in-process
from nasseg.shell.runner.hpo import pareto_mask, parse_hpo_job
from nasseg.shell.runner.inprocess import run_in_process
from nasseg.shell.runner.results import collect_results, summarize
from nasseg.shell.runner.tune_search import run_tune_search
from nasseg.search import Search, load_job
from nasseg.search.config import parse_job

TINY_SPACE = {
    "name": "tiny",
    "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
    "cell": {"inputs": 2, "nodes": 2, "edges": "dense", "decode": {"k": 2}},
    "network": {"type": "chain", "C": 4, "layers": 3, "reductions": [1],
                "stem": {"type": "three_conv", "channels": [8, 8, 8]},
                "head": {"type": "aspp", "rates": [48], "channels": 8}, "classes": 11},
}
EPOCHS = 3


def write_job(folder, **changes):
    """A tiny 2-seed search (about a second per epoch on one core); the space path is relative
    to the job file, so trials must resolve it although Tune runs them in other folders."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    job = {"name": "t", "space": "tiny.yaml", "epochs": EPOCHS, "seeds": [0, 1],
           "data": {"size": [48, 64], "crop": [32, 32], "batch_size": 2, "limit": 8, "val_batch_size": 8},
           "hessian": {"iters": 5}, "early_stop": {"rule": "none"}, **changes}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def model_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_same_search(a, b):
    """Same alphas (and every other weight) and the same metrics, bit for bit."""
    sa, sb = model_state(a), model_state(b)
    assert [k for k in sa if k.startswith("alphas")], "no alphas in the checkpoint"
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{a} vs {b}: {key}"
    columns = ["epoch", "train_loss", "val_loss", "val_miou", "eigenvalue"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv")[columns], pd.read_csv(b / "metrics.csv")[columns])


def events(run_dir):
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The job, and the in-process (no Ray) runs of both seeds that every Ray run must match."""
    folder = tmp_path_factory.mktemp("ray_search")
    job = write_job(folder / "job")
    run_in_process(load_job(job), [0, 1], folder / "local", progress=False)
    return folder, job


@pytest.fixture(scope="module")
def local_ray():
    """One embedded 2-CPU Ray for the module's in-driver tests (starting Ray costs ~15 s here)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_experiment(work, local_ray):
    folder, job = work
    outcomes = run_tune_search(load_job(job), folder / "ray")
    return folder / "ray" / "t", outcomes


def test_seeds_as_trials_match_in_process_runs(work, ray_experiment):
    folder, _ = work
    experiment, outcomes = ray_experiment
    assert sorted(o["seed"] for o in outcomes) == [0, 1]
    assert all(o["status"] == "finished" and o["epochs_run"] == EPOCHS for o in outcomes)
    for seed in (0, 1):
        assert_same_search(experiment / f"seed{seed}", folder / "local" / "t" / f"seed{seed}")
        assert (experiment / f"seed{seed}" / "arch.yaml").exists()
    assert (experiment / "_tune").is_dir() and (experiment / "experiment.yaml").exists()


class KillWorkerAfterFirstCheckpoint(tune.Callback):
    """SIGKILLs the trial's worker process once Tune has registered its epoch-1 checkpoint."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.killed_pid = None
        self.recovered = 0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.killed_pid is None:
            self.killed_pid = int((self.run_dir / "worker.pid").read_text())
            os.kill(self.killed_pid, signal.SIGKILL)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovered += 1


def test_killed_worker_resumes_from_its_epoch_checkpoint(work, local_ray):
    folder, job = work
    killer = KillWorkerAfterFirstCheckpoint(folder / "killed" / "t" / "seed0")
    outcomes = run_tune_search(load_job(job), folder / "killed", seeds=[0], callbacks=[killer])
    run_dir = folder / "killed" / "t" / "seed0"
    assert killer.killed_pid and killer.recovered == 1
    assert int((run_dir / "worker.pid").read_text()) != killer.killed_pid  # a new worker finished it
    restored = [e for e in events(run_dir) if e["event"] == "restored"]
    assert [e["epoch"] for e in restored] == [1]
    assert outcomes[0]["status"] == "finished"
    assert_same_search(run_dir, folder / "local" / "t" / "seed0")


def test_trial_too_big_for_the_cluster_fails_fast(work, local_ray):
    folder, _ = work
    job = write_job(folder / "big", resources={"cpus": 4})
    with pytest.raises(NassegError, match=r"trial needs 4 CPUs, the cluster has 2 in total; "
                                          r"lower resources.cpus in .*job.yaml"):
        run_tune_search(load_job(job), folder / "big")
    job = write_job(folder / "gpu", resources={"gpus": 1})
    with pytest.raises(NassegError, match="trial needs 1 GPUs, the cluster has 0 in total"):
        run_tune_search(load_job(job), folder / "gpu")
    assert not (folder / "big" / "t" / "_tune").exists()


def test_existing_experiment_needs_resume_or_restart(ray_experiment, work):
    folder, job = work
    with pytest.raises(NassegError, match="already holds a search; pass --resume"):
        run_tune_search(load_job(job), folder / "ray")


def test_resume_needs_something_to_resume(work, local_ray):
    folder, job = work
    with pytest.raises(NassegError, match="nothing to resume: .* holds neither a Ray Tune experiment nor seed"):
        run_tune_search(load_job(job), folder / "empty", resume=True)


def test_resume_continues_an_interrupted_in_process_run(work, local_ray):
    """--resume without Tune state: the trial continues from the run dir's last.pt."""
    folder, job = work
    config = load_job(job)
    Search(config, 1, folder / "mixed" / "t" / "seed1", progress=False).run_search(max_epochs=1)
    outcomes = run_tune_search(config, folder / "mixed", seeds=[1], resume=True)
    run_dir = folder / "mixed" / "t" / "seed1"
    assert outcomes[0]["status"] == "finished"
    assert [e["epoch"] for e in events(run_dir) if e["event"] == "resumed"] == [1]
    assert_same_search(run_dir, folder / "local" / "t" / "seed1")


def test_diverged_trial_fails_once_then_resume_with_new_settings(work, local_ray, capsys):
    """A diverged trial is not retried epoch by epoch (it would diverge again): its retry fails at
    once; --resume with changed settings (as the error message suggests) reruns it."""
    folder, job = work
    broken = load_job(job, ["alpha_limit=1e-6", "max_failures=1"])
    with pytest.raises(NassegError, match=r"1 of 1 trials failed \(seed0: search diverged at epoch 1, step 1: "
                                          r"architecture parameters exploded"):
        run_tune_search(broken, folder / "diverged", seeds=[0])
    run_dir = folder / "diverged" / "t" / "seed0"
    assert [e["event"] for e in events(run_dir)] == ["diverged"]  # the retry did not train again
    assert "worker failed" in capsys.readouterr().out
    assert trial_record(run_dir)["overrides"] == {"alpha_limit": 1e-6, "max_failures": 1}  # the --set values
    outcomes = run_tune_search(load_job(job), folder / "diverged", seeds=[0], resume=True)
    assert outcomes[0]["status"] == "finished"
    assert_same_search(run_dir, folder / "local" / "t" / "seed0")
    assert trial_record(run_dir)["overrides"] == {}  # resumed with the job file's settings
    assert len(trial_record(run_dir)["placements"]) == 2  # started, resumed (the retry was refused at once)


def trial_record(run_dir):
    return json.loads((run_dir / "trial.json").read_text())


def test_no_ray_computes_what_a_trial_computes(work, ray_experiment):
    """--no-ray runs a seed with resources.cpus torch threads as a trial does, whatever this process
    had: the same numbers in and out of Ray (two threads sum in another order: other losses and
    eigenvalues from epoch 1 on)."""
    folder, job = work
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_in_process(load_job(job), [0], folder / "threads", progress=False)
        assert torch.get_num_threads() == 2  # given back after the run
    finally:
        torch.set_num_threads(before)
    run_dir, trial = folder / "threads" / "t" / "seed0", ray_experiment[0] / "seed0"
    assert [p["threads"] for p in trial_record(run_dir)["placements"]] == [1]
    assert [p["threads"] for p in trial_record(trial)["placements"]] == [1]
    assert_same_search(run_dir, trial)
    assert (run_dir / "alphas" / "epoch_001.json").read_bytes() == (trial / "alphas" / "epoch_001.json").read_bytes()


def test_results_show_what_set_changed(work, capsys):
    """`nasseg results`: overrides are the settings a run changed from its job file with --set (a
    --set that changes nothing is not one)."""
    folder, job = work
    out = folder / "overrides"
    argv = ["search", str(job), "--no-ray", "--seed", "1", "--out", str(out), "--quiet"]
    assert runner_main([*argv, "--set", "epochs=1", "--set", "data.limit=8", "--set", "weights.lr=0.05"]) == 0
    capsys.readouterr()
    assert runner_main(["results", str(out / "t"), "--csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table["overrides"]) == ["epochs=1 weights.lr=0.05"] and "nodes" not in table  # no Ray, no nodes


def test_out_must_be_a_folder(work, capsys):
    _, job = work
    for extra in ([], ["--no-ray"]):
        assert runner_main(["search", str(job), "--out", "s3://bucket/runs", *extra]) == 2
        err = capsys.readouterr().err
        assert "--out s3://bucket/runs: nasseg writes run directories as ordinary files and takes a folder" in err
        assert err.count("\n") == 1
    assert not Path("s3:").exists()


def test_ray_messages_are_one_plain_line(capsys, monkeypatch):
    """What the cluster publishes to a driver: the ~40 lines about a dead node go (nasseg says which
    trial lost which node), any other message is its first line, without colour codes."""
    import ray._private.worker as ray_worker

    from nasseg.shell.runner.console import plain_ray_console

    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")
    monkeypatch.delenv("RAY_COLOR_PREFIX")
    original = ray_worker.print_to_stdstream
    dump = ("Raylet is terminated. Termination is unexpected. Possible reasons include: (1) SIGKILL by the user "
            "or system OOM killer. Last 20 lines of the Raylet logs:\n    [state-dump] NodeManager: ...\n")
    dead = ("The node with node id: 25ea32ee0380 and address: 10.0.0.5 and node name: 10.0.0.5 has been marked "
            "dead because the detector has missed too many heartbeats from it. This can happen when a \t(1) ...")
    memory = "\x1b[33mTask was killed due to the node running low on memory.\x1b[0m\nMemory on the node: ..."
    with plain_ray_console():
        for message in (dump, dead, memory):
            ray_worker.print_to_stdstream({"lines": [message], "pid": "raylet", "is_err": False}, ignore_prefix=False)
        assert os.environ["RAY_COLOR_PREFIX"] == "0"  # stdout is not a terminal here
    out, err = capsys.readouterr()
    assert out == "" and err == "ray: Task was killed due to the node running low on memory.\n"
    assert ray_worker.print_to_stdstream is original


def test_results_table(ray_experiment, capsys):
    experiment, _ = ray_experiment
    table = collect_results(experiment)
    assert list(table["run"]) == ["seed0", "seed1"]
    assert list(table["seed"]) == [0, 1]
    assert set(table["status"]) == {"finished"} and set(table["epochs"]) == {EPOCHS}
    assert set(table["arch_epoch"]) == {EPOCHS}
    for row in table.itertuples():
        metrics = pd.read_csv(experiment / row.run / "metrics.csv")
        assert row.final_val_miou == pytest.approx(metrics["val_miou"].iloc[-1])
        assert row.best_val_miou == pytest.approx(metrics["val_miou"].max())
        arch = yaml.safe_load((experiment / row.run / "arch.yaml").read_text())
        first_op = arch["cells"]["normal"]["nodes"][2][0][0]
        assert row.genotype.split()[0].startswith({"sep_conv_3x3": "sep3", "max_pool_3x3": "max3",
                                                   "skip_connect": "skip", "none": "none"}[first_op])
        assert row.checkpoint.endswith(f"{row.run}/checkpoints/last.pt")
        assert re.fullmatch(r"[0-9a-f]{56}", row.nodes)  # the Ray node id of the trial (one node, no restart)
    assert table["config"].nunique() == 1  # two seeds of one config
    summary = summarize(table)
    assert summary.loc[0, "runs"] == 2 and summary.loc[0, "seeds"] == "0,1"
    assert summary.loc[0, "final_val_miou_mean"] == pytest.approx(table["final_val_miou"].mean())
    assert summary.loc[0, "final_val_miou_std"] == pytest.approx(table["final_val_miou"].std())

    assert runner_main(["results", str(experiment), "--sort", "final_val_miou", "--csv"]) == 0
    csv = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(csv["final_val_miou"]) == sorted(table["final_val_miou"], reverse=True)
    assert runner_main(["results", str(experiment), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["trials"]) == 2 and data["configs"][0]["runs"] == 2
    assert runner_main(["results", str(experiment)]) == 0
    shown = capsys.readouterr().out
    assert "±" in shown and table["nodes"][0][:8] in shown and table["nodes"][0] not in shown  # node ids cut
    assert runner_main(["results", str(experiment), "--sort", "bestmiou"]) == 2
    assert "no such column" in capsys.readouterr().err


def test_results_of_in_process_runs(work):
    folder, _ = work
    table = collect_results(folder / "local" / "t")
    assert list(table["seed"]) == [0, 1] and set(table["status"]) == {"finished"}


# --- the driver dies --------------------------------------------------------------------------

def start_search(job, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nasseg", "search", str(job), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def test_killed_driver_then_resume_finishes_every_trial(work):
    folder, job = work
    out = folder / "driver"
    driver = start_search(job, out)
    lines = []
    try:
        for line in driver.stdout:
            lines.append(line)
            if "epoch   1/" in line:  # a trial checkpointed epoch 1 (and Tune snapshots the experiment)
                time.sleep(0.3)
                break
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:  # Ray's helper processes of the dead driver share its process group
        time.sleep(2)
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert any("epoch   1/" in line for line in lines), "".join(lines)
    unfinished = [s for s in (0, 1) if not (out / "t" / f"seed{s}" / "result.json").exists()]
    assert unfinished, "both trials finished before the driver was killed"

    resumed = subprocess.run([sys.executable, "-m", "nasseg", "search", str(job), "--out", str(out),
                              "--resume"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    restored = []
    for seed in (0, 1):
        run_dir = out / "t" / f"seed{seed}"
        assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"
        if seed in unfinished:
            assert f"[seed {seed}] finished" in resumed.stdout
            restored += [e["epoch"] for e in events(run_dir) if e["event"] == "restored"]
        assert_same_search(run_dir, folder / "local" / "t" / f"seed{seed}")
    assert restored and min(restored) >= 1  # continued from an epoch checkpoint, not from scratch


# --- Optuna HPO -------------------------------------------------------------------------------

HPO_SPACE = {"weights.lr": {"loguniform": [1.0e-3, 1.0e-1]}, "arch.lr": {"loguniform": [1.0e-4, 1.0e-2]},
             "data.batch_size": {"choice": [2, 4]}}


def hpo_job(job, **changes):
    return {"kind": "hpo", "name": "h", "search": str(job), "epochs": 4, "seed": 0, "trials": 6,
            "objectives": [{"val_loss": "min"}, {"macs": "min"}], "space": HPO_SPACE,
            "asha": {"grace_period": 1, "reduction_factor": 2}, **changes}


def test_hpo_job_validation(work):
    _, job = work
    hpo = parse_hpo_job(hpo_job(job), "h.yaml")
    assert hpo.objectives == (("val_loss", "min"), ("macs", "min")) and hpo.cost_metrics == ["macs"]
    assert hpo.search.epochs == 4 and hpo.search.seeds == (0,)
    with pytest.raises(SpecError, match=r"space.weights.lrr: .*unknown key"):
        parse_hpo_job(hpo_job(job, space={"weights.lrr": {"uniform": [0.01, 0.1]}}), "h.yaml")
    with pytest.raises(SpecError, match=r"space.data.batch_size: 0 is not a valid value"):
        parse_hpo_job(hpo_job(job, space={"data.batch_size": {"choice": [0, 2]}}), "h.yaml")
    with pytest.raises(SpecError, match=r"space.weights.lr: expected \[low, high\] with low < high"):
        parse_hpo_job(hpo_job(job, space={"weights.lr": {"loguniform": [0.1, 0.01]}}), "h.yaml")
    with pytest.raises(SpecError, match=r"space.epochs: set by the HPO job itself"):
        parse_hpo_job(hpo_job(job, space={"epochs": {"randint": [1, 3]}}), "h.yaml")
    with pytest.raises(SpecError, match=r"objectives\[0\].miou: unknown key 'miou'; expected one of val_miou"):
        parse_hpo_job(hpo_job(job, objectives=[{"miou": "max"}]), "h.yaml")


def test_pareto_mask():
    values = torch.tensor([[0.5, 10.0], [0.6, 20.0], [0.4, 30.0], [0.6, 15.0]]).numpy()
    assert pareto_mask(values, ["max", "min"]).tolist() == [True, False, False, True]


def test_resources_key_is_validated(work):
    _, job = work
    data = yaml.safe_load(job.read_text())
    with pytest.raises(SpecError, match="resources.cpus: must be > 0"):
        parse_job({**data, "resources": {"cpus": 0}}, str(job))
    with pytest.raises(SpecError, match="resources.cpu: unknown key"):
        parse_job({**data, "resources": {"cpu": 2}}, str(job))
    config = parse_job({**data, "resources": {"cpus": 2, "gpus": 0.5}, "max_failures": 0}, str(job))
    assert (config.resources.cpus, config.resources.gpus, config.max_failures) == (2, 0.5, 0)
    assert load_job(job).resources.cpus == 1 and load_job(job).max_failures == 2


@pytest.mark.slow
def test_optuna_hpo_with_asha(work, capsys):
    folder, job = work
    hpo_file = folder / "hpo.yaml"
    hpo_file.write_text(yaml.safe_dump(hpo_job(job)))
    assert runner_main(["search", str(hpo_file), "--out", str(folder / "hpo")]) == 0
    experiment = folder / "hpo" / "h"
    table = collect_results(experiment)
    assert len(table) == 6 and table["overrides"].str.contains("weights.lr=").all()
    assert (table["status"] == "pruned").any(), table  # ASHA stopped weak trials...
    assert (table.loc[table["status"] == "pruned", "epochs"] < 4).all()  # ...before their last epoch
    assert (table["status"] == "finished").any()
    pareto = pd.read_csv(experiment / "pareto.csv")
    assert pareto["pareto"].any() and set(pareto["run"]) == set(table["run"])
    assert (experiment / "pareto.png").stat().st_size > 1000
    import optuna
    study = optuna.load_study(study_name="h", storage=f"sqlite:///{experiment / 'optuna.db'}")
    assert len(study.trials) == 6
    assert "trials on the Pareto front" in capsys.readouterr().out
