"""Losing a Ray node mid-run, on a real two-node cluster on this machine: a token-authenticated head
(`ray start --head`) and a worker node (`ray start --address`), one CPU each; the worker node's
raylet and worker processes are SIGKILLed right after a checkpoint (its agents live on and report
the death, as after an OOM kill).

- ``nasseg search --address`` (the documented command: a token in RAY_AUTH_TOKEN, no RAY_AUTH_MODE):
  seed 0 runs on the worker node, is restored on the head from its epoch-1 checkpoint, read from the
  shared ``--out``, and ends byte for byte like an uninterrupted run; the user sees one line per event.
- a trial that only the worker node can hold (2 CPUs, the head has 1) says that it waits for a node,
  and continues from its checkpoint on one that joins later; one needing more than any node has
  is refused up front.
- ``nasseg train --workers 2 --address``: one rank per node; the group restarts from the last
  checkpoint on the head and a replacement node, and ends with the weights of an uninterrupted run.

Both nodes share this machine's disk, so ``--out`` is a shared folder; HOME and TMPDIR of every
process are test folders, checked to hold nothing afterwards: nothing is written outside ``--out``
(Ray's own session files stay in the nodes' --temp-dir). Slow (minutes on two cores):
``pytest -m slow tests/test_ray_node_loss.py``."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from nasseg.search import load_job
from nasseg.shell.runner.inprocess import run_in_process
from nasseg.train.checkpoint import read_checkpoint
from raycluster import (Cluster, Node, kill_raylet_and_workers, node_env, node_id_of, start_head, start_node,
                        stop_cluster)
from test_ray_search import events, write_job

pytestmark = pytest.mark.slow

# Holds the head's only CPU until stdin closes, so that the search's first trial (seed 0) can only
# start on the worker node; prints the head's node id once it holds it.
BLOCKER = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
class Hold:
    def node(self):
        return ray.get_runtime_context().get_node_id()

head = ray.get_runtime_context().get_node_id()  # a driver attaches to the head node of its host
hold = Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
print(ray.get(hold.node.remote()), flush=True)
sys.stdin.read()
"""
TIMING_COLUMNS = ("epoch_seconds", "eval_seconds", "eigen_seconds")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict[str, Path]:
    """HOME and TMPDIR for every process of the module (nodes, drivers), to be found empty."""
    root = tmp_path_factory.mktemp("node_loss_scratch")
    folders = {"HOME": root / "home", "TMPDIR": root / "tmp"}
    for folder in folders.values():
        folder.mkdir()
    return folders


@pytest.fixture(scope="module")
def head(scratch):
    """The head: one CPU, token authentication; the GCS declares a silent node dead after ~3 s."""
    token = secrets.token_hex(16)
    env = node_env(token, RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
                   **{k: str(v) for k, v in scratch.items()})
    cluster, markers = start_head(token, num_cpus=1, env=env)
    try:
        yield cluster
    finally:
        stop_cluster(*markers)
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture
def nodes(head, scratch):
    """Starts worker nodes of one CPU each (stopped after the test)."""
    started: list[Node] = []

    def start(cpus: int = 1) -> Node:
        node = start_node(head, cpus, node_env(head.token, **{k: str(v) for k, v in scratch.items()}))
        started.append(node)
        return node

    yield start
    for node in started:
        stop_cluster(*node.markers)
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def client_env(cluster: Cluster, scratch: dict[str, Path]) -> dict[str, str]:
    """A user's shell: the token in RAY_AUTH_TOKEN and nothing else of Ray's (no RAY_AUTH_MODE)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, **{k: str(v) for k, v in scratch.items()}, "RAY_AUTH_TOKEN": cluster.token,
            "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def start_driver(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`python -m nasseg ...` with stdout and stderr redirected to a file (not a terminal)."""
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "nasseg", *argv], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def wait_for(what: str, check, process: subprocess.Popen, log: Path, timeout: float = 300):
    """Polls ``check()`` until it returns something truthy; fails with the driver's log if the
    driver ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {what}; driver log:\n{log.read_text()}")


def finish(process: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
    text = log.read_text()
    assert process.returncode == 0, text
    return text


def assert_plain_output(text: str, token: str) -> None:
    """What a user sees in a log file: no colour codes, no raylet log dumps, no auth retries, no token."""
    assert "\x1b[" not in text
    for noise in ("[state-dump]", "Raylet is terminated", "marked dead", "InvalidAuthToken", "Traceback"):
        assert noise not in text, f"{noise!r} in the output:\n{text}"
    assert token not in text


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def placements(run_dir: Path) -> list[dict]:
    trial = run_dir / "trial.json"
    return read_json(trial)["placements"] if trial.exists() else []


def assert_same_files(run: Path, reference: Path) -> None:
    """alphas/epoch_*.json, arch/epoch_*.yaml and arch.yaml byte for byte; metrics.csv without
    its timing columns, as text."""
    names = sorted(p.relative_to(reference) for p in [*reference.glob("alphas/epoch_*.json"),
                                                         *reference.glob("arch/epoch_*.yaml")])
    assert names and names == sorted(p.relative_to(run) for p in [*run.glob("alphas/epoch_*.json"),
                                                                  *run.glob("arch/epoch_*.yaml")])
    for name in [*names, Path("arch.yaml")]:
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name

    def untimed(path: Path) -> str:
        return pd.read_csv(path, dtype=str).drop(columns=list(TIMING_COLUMNS)).to_csv(index=False)

    assert untimed(run / "metrics.csv") == untimed(reference / "metrics.csv")


def assert_nothing_outside(scratch: dict[str, Path]) -> None:
    """No file in HOME or TMPDIR (torch leaves an empty cache folder, Python's multiprocessing a
    listener socket of a killed worker: neither holds data)."""
    files = [str(p) for folder in scratch.values() for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    assert not files, f"written outside --out: {files}"


def test_search_trial_moves_to_the_head_and_ends_as_if_undisturbed(head, nodes, scratch, tmp_path):
    started = time.monotonic()
    job = write_job(tmp_path / "job", data={"size": [48, 64], "crop": [32, 32], "batch_size": 2, "limit": 24,
                                            "val_batch_size": 8}, max_failures=2)
    run_in_process(load_job(job), [0, 1], tmp_path / "reference", progress=False)  # the undisturbed runs
    worker = nodes()
    head_id = node_id_of(head.temp_dir)
    blocker = subprocess.Popen([sys.executable, "-c", BLOCKER, head.gcs], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True,
                               env={**client_env(head, scratch), "RAY_AUTH_MODE": "token"})
    try:
        assert blocker.stdout.readline().strip() == head_id  # the head's CPU is taken
        out, log = tmp_path / "shared", tmp_path / "search.log"
        driver = start_driver(["search", str(job), "--address", head.gcs, "--out", str(out)], log,
                              client_env(head, scratch))
        seed0 = out / "t" / "seed0"
        first = wait_for("start of seed 0", lambda: placements(seed0), driver, log)
        assert first[0]["node_id"] == worker.node_id  # seed 0 started on the worker node
    finally:
        blocker.stdin.close()  # the head's CPU is free again: seed 1 starts there
        blocker.wait(timeout=60)
    wait_for("epoch 1 of seed 0", lambda: "[seed 0] epoch   1/3" in log.read_text(), driver, log)
    time.sleep(0.3)  # Tune has registered the epoch-1 checkpoint; epoch 2 is running
    kill_raylet_and_workers(worker)
    text = finish(driver, log)

    # the trial moved: epochs up to 1 on the worker node, from its epoch-1 checkpoint on the head
    seed0_nodes = [(p["node_id"], p["from_epoch"]) for p in placements(seed0)]
    assert seed0_nodes == [(worker.node_id, 0), (head_id, 1)], seed0_nodes
    assert [p["node_id"] for p in placements(out / "t" / "seed1")] == [head_id]
    restored = [e for e in events(seed0) if e["event"] == "restored"]
    assert [e["epoch"] for e in restored] == [1]
    checkpoint = Path(restored[0]["checkpoint"])  # read from the shared --out
    assert checkpoint.is_relative_to(out / "t" / "_tune" / "seed0") and checkpoint.name == "last.pt"
    for seed in (0, 1):
        assert read_json(out / "t" / f"seed{seed}" / "result.json")["status"] == "finished"
        assert_same_files(out / "t" / f"seed{seed}", tmp_path / "reference" / "t" / f"seed{seed}")

    # one line per event, in a file: the loss, the restart
    assert_plain_output(text, head.token)
    lost = re.findall(r"^\[seed 0\] node (\w+) \([\d.]+\) lost; restarting from epoch 1 \(restart 1 of at most 2\)$",
                      text, re.M)
    assert lost == [worker.node_id[:8]], text
    moved = re.findall(r"^\[seed 0\] restarted from epoch 1 on node (\w+) \([\d.]+\)$", text, re.M)
    assert moved == [head_id[:8]], text
    assert not [line for line in text.splitlines() if line.startswith("[seed 1]") and "restart" in line]

    # nasseg results: the nodes of each trial, whole in --json, short in the table
    results = subprocess.run([sys.executable, "-m", "nasseg", "results", str(out / "t"), "--json"],
                             capture_output=True, text=True, env=client_env(head, scratch), timeout=120)
    trials = {t["seed"]: t for t in json.loads(results.stdout)["trials"]}
    assert trials[0]["nodes"] == f"{worker.node_id} > {head_id}" and trials[1]["nodes"] == head_id
    assert_nothing_outside(scratch)
    print(f"search node-loss test: {time.monotonic() - started:.0f} s")


def test_a_trial_no_node_left_can_hold_waits_for_one_to_join(head, nodes, scratch, tmp_path):
    """A trial of 1.5 CPUs (one torch thread) fits only the 2-CPU worker node, the head has 1: it is
    refused up front when it needs more than any one node has, says so when its node is lost, and
    continues from its checkpoint on a node that joins later."""
    started = time.monotonic()
    worker = nodes(2)
    job = write_job(tmp_path / "job", seeds=[0], resources={"cpus": 1.5}, max_failures=2,
                    data={"size": [48, 64], "crop": [32, 32], "batch_size": 2, "limit": 24, "val_batch_size": 8})
    out, env = tmp_path / "shared", client_env(head, scratch)
    too_big = subprocess.run([sys.executable, "-m", "nasseg", "search", str(job), "--address", head.gcs, "--out",
                              str(out), "--set", "resources.cpus=2.5"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert too_big.returncode == 2 and too_big.stderr.count("\n") == 1, too_big.stderr
    assert "trial needs 2.5 CPUs on one node, the largest node of the cluster has 2 (3 in total)" in too_big.stderr
    run_in_process(load_job(job), [0], tmp_path / "reference", progress=False)
    log = tmp_path / "search.log"
    driver = start_driver(["search", str(job), "--address", head.gcs, "--out", str(out)], log, env)
    wait_for("epoch 1 of seed 0", lambda: "[seed 0] epoch   1/3" in log.read_text(), driver, log)
    time.sleep(0.3)
    kill_raylet_and_workers(worker)
    wait_for("the failure line", lambda: "it waits for a node" in log.read_text(), driver, log)
    late = nodes(2)
    text = finish(driver, log)

    assert [(p["node_id"], p["from_epoch"]) for p in placements(out / "t" / "seed0")] == [(worker.node_id, 0),
                                                                                             (late.node_id, 1)]
    assert_same_files(out / "t" / "seed0", tmp_path / "reference" / "t" / "seed0")
    assert_plain_output(text, head.token)
    failure = (rf"^\[seed 0\] node {worker.node_id[:8]} \([\d.]+\) lost; restarting from epoch 1 \(restart 1 of at "
               r"most 2\); it waits for a node with 1\.5 CPUs to join: no node left has them$")
    assert re.search(failure, text, re.M), text
    assert re.search(rf"^\[seed 0\] restarted from epoch 1 on node {late.node_id[:8]} ", text, re.M), text
    assert_nothing_outside(scratch)
    print(f"waiting node-loss test: {time.monotonic() - started:.0f} s")


TRAIN = ["train", "icnet_resnet50", "--data", "camvid_demo", "--size", "90x120", "--crop", "64x64", "--batch-size",
         "4", "--iters", "12", "--checkpoint-every", "4", "--workers", "2", "--set", "log_every=1"]


def train_starts(run_dir: Path) -> list[dict]:
    path = run_dir / "ray_train" / "placements.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint_iteration(run_dir: Path) -> int:
    try:
        return int(read_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"])
    except Exception:  # not written yet
        return 0


def test_training_restarts_its_worker_group_from_the_last_checkpoint(head, nodes, scratch, tmp_path):
    started = time.monotonic()
    head_id = node_id_of(head.temp_dir)
    worker = nodes()
    out, env = tmp_path / "shared", client_env(head, scratch)
    argv = [*TRAIN, "--address", head.gcs, "--out", str(out)]
    reference = start_driver([*argv, "--name", "whole", "--quiet"], tmp_path / "whole.log", env)
    finish(reference, tmp_path / "whole.log")
    assert {w["node_id"] for w in train_starts(out / "whole")[0]["workers"]} == {head_id, worker.node_id}

    log, run = tmp_path / "killed.log", out / "killed"
    driver = start_driver([*argv, "--name", "killed"], log, env)
    wait_for("checkpoint of iteration 4", lambda: checkpoint_iteration(run) >= 4, driver, log)
    assert {w["node_id"] for w in train_starts(run)[0]["workers"]} == {head_id, worker.node_id}
    kill_raylet_and_workers(worker)
    replacement = nodes()  # a new node joins (as an autoscaler's would): the group needs two CPUs
    text = finish(driver, log)

    first, second = train_starts(run)
    assert first["from_iteration"] == 0 and second["from_iteration"] == 4  # resumed, not from scratch
    assert {w["node_id"] for w in second["workers"]} == {head_id, replacement.node_id}
    whole, killed = (read_checkpoint(out / name / "final.pt")["state_dict"] for name in ("whole", "killed"))
    assert all(torch.equal(whole[k], killed[k]) for k in whole)
    iterations = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert iterations == list(range(1, 13))
    assert_plain_output(text, head.token)
    restart = [line for line in text.splitlines() if "workers restarted" in line]
    (lost_ip,) = {w["node_ip"] for w in first["workers"] if w["node_id"] == worker.node_id}
    assert restart == [f"node {worker.node_id[:8]} ({lost_ip}) lost; workers restarted from iteration 4 on node(s) "
                       + ", ".join(f"{w['node_id'][:8]} ({w['node_ip']})" for w in second["workers"])], text
    assert_nothing_outside(scratch)
    print(f"training node-loss test: {time.monotonic() - started:.0f} s")
