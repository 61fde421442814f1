"""`nasseg submit | status | logs | stop` against a real Ray cluster on this machine (`ray start
--head` on 127.0.0.1 with token authentication), the console blocks of docs/ray.md, and
data-parallel `nasseg train --workers 2` on Ray Train. The cluster is stopped by its own process
ids afterwards, also when a test fails; nothing else on the machine is touched."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasseg.shell.cli import main as cli
from raycluster import Cluster, descends_from, free_port, node_id_of, processes_of, start_head, stop_cluster

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# the demo search cut down to seconds: one epoch on 8 images of 32x32
TINY_SEARCH = ["--set", "epochs=1", "--set", "data.crop=[32,32]", "--set", "data.limit=8",
               "--set", "hessian.iters=2"]
OUTPUTS: list[str] = []  # everything the commands printed: the token must appear in none of it


@pytest.fixture(scope="module")
def cluster():
    token = secrets.token_hex(16)
    cluster, markers = start_head(token)
    try:
        yield cluster
    finally:
        stop_cluster(*markers)
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    assert not any(token in text for text in OUTPUTS), "the token was printed"


@pytest.fixture
def client(cluster, monkeypatch, tmp_path):
    """A client shell: the cluster's token in RAY_AUTH_TOKEN, a HOME without ~/.ray/auth_token."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.chdir(REPO)
    return cluster


def nasseg(capsys, argv: list[str]) -> tuple[int, str, str]:
    """Runs one `nasseg` command in this process; (exit status, stdout, stderr)."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    OUTPUTS.append(out + err)
    return code, out, err


def console_commands(heading: str) -> list[str]:
    """The `$ ...` lines of the first console block after ``heading`` in docs/ray.md."""
    text = (DOCS / "ray.md").read_text()
    block = re.search(re.escape(heading) + r".*?```console\n(.*?)```", text, re.S).group(1)
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def doc_argv(line: str, cluster: Cluster, shared: Path) -> list[str]:
    line = line.replace("http://HEAD:8265", cluster.address).replace("/shared", str(shared))
    argv = shlex.split(line)
    assert argv[0] == "nasseg", line
    return argv[1:] + (TINY_SEARCH if argv[1] == "submit" else [])


def wait_for_status(capsys, job_id: str, wanted: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, out, _ = nasseg(capsys, ["status", job_id, "--json"])
        status = json.loads(out)["status"] if code == 0 else None
        if status in wanted or time.monotonic() > deadline:
            return status
        time.sleep(1)


def test_submit_logs_status_results_walkthrough(client, tmp_path, capsys, monkeypatch):
    """docs/ray.md "Submit to a cluster", command by command."""
    shared = tmp_path / "shared"
    lines = console_commands("## Submit to a cluster")
    assert lines[0] == "export RAY_API_SERVER_ADDRESS=http://HEAD:8265" and len(lines) == 6
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", client.address)

    code, out, err = nasseg(capsys, doc_argv(lines[1], client, shared))  # submit --no-wait
    assert code == 0, err
    assert "submitted job demo-1: python -m nasseg search jobs/demo.yaml --out " + str(shared / "runs") in out, repr(out)
    assert "nasseg logs demo-1 --follow" in out

    code, out, err = nasseg(capsys, doc_argv(lines[2], client, shared))  # logs --follow
    assert code == 0, out + err
    assert "[seed 0] epoch   1/1  train loss" in out and "[seed 0] finished" in out
    assert "job demo-1 SUCCEEDED" in out

    code, out, _ = nasseg(capsys, ["logs", "demo-1"])  # the log so far (here: all of it)
    assert code == 0 and "Running entrypoint for job demo-1" in out and "[seed 0] epoch   1/1" in out

    code, out, _ = nasseg(capsys, doc_argv(lines[3], client, shared))  # status demo-1
    assert code == 0 and re.search(r"^status\s+SUCCEEDED$", out, re.M) and "started" in out
    code, out, _ = nasseg(capsys, ["status", "demo-1", "--json"])
    record = json.loads(out)
    assert record["metadata"]["out"] == str(shared / "runs") and record["duration_s"] > 0

    code, out, _ = nasseg(capsys, doc_argv(lines[4], client, shared))  # status: the table
    assert code == 0 and out.startswith("JOB") and re.search(r"^demo-1\s+SUCCEEDED", out, re.M)

    code, out, _ = nasseg(capsys, doc_argv(lines[5], client, shared))  # results
    assert code == 0 and re.search(r"seed0\s+.*finished", out), out
    assert (shared / "runs" / "demo" / "seed0" / "arch.yaml").is_file()

    code, _, err = nasseg(capsys, doc_argv(lines[1], client, shared))  # the same job id again
    assert code == 2 and "already has a job 'demo-1'; choose another --job-id" in err


def test_stop_a_running_job_with_the_token_from_its_file(client, tmp_path, capsys, monkeypatch):
    """docs/ray.md "Stopping a job"; the token now comes from ~/.ray/auth_token."""
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text(client.token + "\n")
    monkeypatch.setenv("RAY_ADDRESS", client.address)
    lines = console_commands("it later:")
    assert [shlex.split(line)[1] for line in lines] == ["submit", "stop", "status"]
    argv = doc_argv(lines[0], client, tmp_path)
    code, out, err = nasseg(capsys, [*argv, "--set", "epochs=50"])  # long enough to be stopped
    assert code == 0, err
    assert wait_for_status(capsys, "demo-2", {"RUNNING", "FAILED", "SUCCEEDED"}) == "RUNNING"
    code, out, err = nasseg(capsys, doc_argv(lines[1], client, tmp_path))
    assert code == 0 and "job demo-2: STOPPED" in out, out + err
    code, out, _ = nasseg(capsys, doc_argv(lines[2], client, tmp_path))
    assert re.search(r"^status\s+STOPPED$", out, re.M)
    code, out, _ = nasseg(capsys, ["stop", "demo-2"])
    assert code == 0 and "already STOPPED; nothing to stop" in out


@pytest.mark.slow
def test_stopped_search_resumes_from_its_last_epoch(client, tmp_path, capsys):
    """Stop a search job after its first epoch, then `nasseg submit ... --resume` finishes it from there."""
    out = tmp_path / "runs"
    job = ["submit", "jobs/demo.yaml", "--address", client.address, "--out", str(out), *TINY_SEARCH,
           "--set", "epochs=3"]  # the later --set wins
    code, _, err = nasseg(capsys, [*job, "--job-id", "long", "--no-wait"])
    assert code == 0, err
    deadline = time.monotonic() + 180
    while "epoch   1/3" not in nasseg(capsys, ["logs", "long", "--address", client.address])[1]:
        assert time.monotonic() < deadline, "no epoch in 3 minutes"
        time.sleep(1)
    code, out_text, _ = nasseg(capsys, ["stop", "long", "--address", client.address])
    assert "job long: STOPPED" in out_text
    run_dir = out / "demo" / "seed0"
    assert not (run_dir / "result.json").exists()
    code, out_text, err = nasseg(capsys, [*job, "--job-id", "long-resumed", "--resume", "--follow"])
    assert code == 0, out_text + err
    assert "resuming" in out_text and "[seed 0] finished: ran all 3 epochs" in out_text
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] in ("restored", "resumed") and e["epoch"] >= 1 for e in events), events


@pytest.mark.slow
def test_submitted_training_job_on_two_workers(client, tmp_path, capsys):
    """A training job file submitted with --workers 2: Ray Train inside the job, on the cluster."""
    tiny = ["--set", "data.dataset=camvid_demo", "--set", "iters=4", "--set", "data.size=[90,120]",
            "--set", "data.crop=[64,64]", "--set", "data.batch_size=2", "--set", "checkpoint_every=2",
            "--set", "log_every=1", "--set", "eval_every=0"]
    code, out, err = nasseg(capsys, ["submit", "jobs/retrain_camvid_icnet.yaml", "--address", client.address,
                                     "--out", str(tmp_path), "--job-id", "train-2", *tiny, "--workers", "2",
                                     "--follow"])
    assert code == 0, out + err
    assert "python -m nasseg train jobs/retrain_camvid_icnet.yaml" in out and "--workers 2" in out
    assert "on 2 Ray Train workers (4 iterations, global batch 2)" in out and "iteration 4/4  loss" in out
    assert "job train-2 SUCCEEDED" in out
    run = tmp_path / "camvid_icnet"
    assert (run / "final.pt").is_file() and (run / "ray_train").is_dir()


@pytest.mark.parametrize("argv, message", [
    (["status", "--address", "ray://127.0.0.1:10001"], "is a Ray Client address; expected the Ray dashboard"),
    (["status", "--address", "127.0.0.1:6379"], "is the GCS port (what `nasseg search --address`"),
    (["logs", "x", "--address", "http://127.0.0.1:{closed}"], "cannot reach the Ray dashboard at http://127.0.0.1:"),
    (["status", "--address", "{gcs}"], "cannot talk to the Ray dashboard at http://127.0.0.1:"),
    (["status", "no-such-job", "--address", "{dashboard}"], "no job 'no-such-job' on the Ray cluster at"),
    (["logs", "no-such-job", "--follow", "--address", "{dashboard}"], "no job 'no-such-job'"),
    (["stop", "no-such-job", "--address", "{dashboard}"], "no job 'no-such-job'"),
    (["submit", "/etc/hostname", "--address", "{dashboard}"], "is outside the uploaded folder"),
    (["submit", "jobs/demo.yaml", "--address", "{dashboard}", "--set", "epochz=1"], "epochz: unknown key"),
    (["status"], "no Ray cluster given: pass --address http://HEAD:8265"),
])
def test_bad_input_is_one_line(client, capsys, argv, message):
    argv = [a.format(closed=free_port(), gcs=client.gcs, dashboard=client.address) for a in argv]
    code, out, err = nasseg(capsys, argv)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_token_is_required_checked_and_never_printed(client, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token-0123456789")
    code, _, err = nasseg(capsys, ["status", "--address", client.address])
    assert code == 2 and "rejected the authentication token from RAY_AUTH_TOKEN" in err
    assert "not-the-token-0123456789" not in err
    # no token at all: a fresh process, so that no Ray state of this one can supply one
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path / "empty_home")
    done = subprocess.run([sys.executable, "-m", "nasseg", "status", "--address", client.address],
                          env=env, capture_output=True, text=True, timeout=120)
    OUTPUTS.append(done.stdout + done.stderr)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("nasseg: error: the Ray cluster at") and \
        "requires token authentication and no token was found here" in done.stderr


def test_a_job_that_fails_at_once_is_reported(client, capsys):
    code, out, err = nasseg(capsys, ["submit", "jobs/demo.yaml", "--address", client.address, "--job-id", "broken",
                                     "--python", "/no/such/python", *TINY_SEARCH])
    assert code == 2 and "submitted job broken: /no/such/python -m nasseg search" in out
    assert "nasseg: error: job broken FAILED: " in err and "/no/such/python" in err  # the log's end


def test_token_from_the_environment_works_in_a_fresh_process(client, tmp_path):
    """The whole output of a real `status` run (Ray's own logging included) never shows the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path / "home"), RAY_AUTH_TOKEN=client.token, RAY_ADDRESS=client.address)
    done = subprocess.run([sys.executable, "-m", "nasseg", "status"], env=env,
                          capture_output=True, text=True, timeout=120)
    OUTPUTS.append(done.stdout + done.stderr)
    assert done.returncode == 0 and done.stdout.startswith("JOB"), done.stderr
    assert client.token not in done.stdout + done.stderr


def clean_shell(home: Path, **ray_settings: str) -> dict[str, str]:
    """A fresh user's shell: none of this process's Ray variables, its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", **ray_settings}


def test_search_on_the_cluster_finds_its_token(client, tmp_path):
    """docs/ray.md's `nasseg search JOB --address HEAD:6379` in a shell whose only Ray setting is the
    token in Ray's token file (no RAY_AUTH_MODE): it authenticates at once, no InvalidAuthToken retries."""
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text(client.token + "\n")
    done = subprocess.run([sys.executable, "-m", "nasseg", "search", "jobs/demo.yaml", "--address", client.gcs,
                           "--out", str(tmp_path / "runs"), *TINY_SEARCH], cwd=REPO, env=clean_shell(tmp_path / "home"),
                          capture_output=True, text=True, timeout=300)
    OUTPUTS.append(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[seed 0] finished" in done.stdout and "InvalidAuthToken" not in done.stderr, done.stderr
    record = json.loads((tmp_path / "runs" / "demo" / "seed0" / "trial.json").read_text())
    assert [p["node_id"] for p in record["placements"]] == [node_id_of(client.temp_dir)]


def test_search_with_a_wrong_token_is_one_line(client, tmp_path):
    """Ray retries a rejected token for ~20 s, its C++ client logging each retry: one line instead."""
    done = subprocess.run([sys.executable, "-m", "nasseg", "search", "jobs/demo.yaml", "--address", client.gcs,
                           "--out", str(tmp_path / "runs"), *TINY_SEARCH], cwd=REPO,
                          env=clean_shell(tmp_path / "home", RAY_AUTH_TOKEN="not-the-token-0123456789"),
                          capture_output=True, text=True, timeout=300)
    OUTPUTS.append(done.stdout + done.stderr)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr == (f"nasseg: error: the Ray cluster at {client.gcs} rejected the authentication token "
                           "from RAY_AUTH_TOKEN; use the cluster's token (`ray get-auth-token` on the head node "
                           "prints it)\n")
    assert "not-the-token-0123456789" not in done.stderr


def test_search_without_a_token_is_one_line(client, tmp_path):
    """No token anywhere (no RAY_AUTH_TOKEN, no token file): one line saying where to put it, at once
    instead of after Ray's retries."""
    done = subprocess.run([sys.executable, "-m", "nasseg", "search", "jobs/demo.yaml", "--address", client.gcs,
                           "--out", str(tmp_path / "runs"), *TINY_SEARCH], cwd=REPO,
                          env=clean_shell(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    OUTPUTS.append(done.stdout + done.stderr)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"nasseg: error: the Ray cluster at {client.gcs} requires token authentication "
                                  "and no token was found here; set RAY_AUTH_TOKEN"), done.stderr
    assert not (tmp_path / "runs").exists()


# --- nasseg train --workers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    """An embedded 2-CPU Ray in this process (train --workers reuses an initialised Ray)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024**2)
    yield
    ray.shutdown()


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from nasseg.train.checkpoint import read_checkpoint

    return read_checkpoint(run_dir / "final.pt")["state_dict"]


def docs_train_argv() -> list[str]:
    (line,) = console_commands("## Data-parallel retraining")
    argv = shlex.split(line)[1:] + ["--set", "log_every=1"]
    assert argv[argv.index("--out") + 1] == "runs/train"
    return argv


def log_iterations(run_dir: Path) -> list[int]:
    return [int(row.split(",")[0]) for row in (run_dir / "log.csv").read_text().splitlines()[1:]]


def train_with_two_workers(tmp_path: Path, capsys) -> tuple[list[str], Path]:
    """docs/ray.md's `nasseg train ... --workers 2` in ``tmp_path``: (its argv, the run directory)."""
    from nasseg.train.checkpoint import load_trained

    argv = docs_train_argv()
    code, out, err = nasseg(capsys, argv)
    assert code == 0, out + err
    assert "on 2 Ray Train workers (6 iterations, global batch 4)" in out and "iteration 6/6  loss" in out
    run = tmp_path / "runs" / "train" / "icnet_resnet50"
    assert (run / "ray_train").is_dir() and (run / "result.json").is_file()
    model, meta = load_trained(run)
    assert meta.iteration == 6 and meta.classes[0] == "Sky"
    return argv, run


def test_train_with_two_workers(local_ray, tmp_path, capsys, monkeypatch):
    """docs/ray.md's `nasseg train ... --workers 2` writes the normal run directory."""
    monkeypatch.chdir(tmp_path)
    train_with_two_workers(tmp_path, capsys)


@pytest.mark.slow
def test_train_with_two_workers_then_resume(local_ray, tmp_path, capsys, monkeypatch):
    """--resume with more iterations continues a 2-worker run on two workers again (each Ray Train
    worker group takes ~20 s to start, hence slow; the bitwise resume is tested below)."""
    from nasseg.train.checkpoint import load_trained

    monkeypatch.chdir(tmp_path)
    argv, run = train_with_two_workers(tmp_path, capsys)
    code, out, err = nasseg(capsys, [*argv, "--iters", "8", "--resume", "--quiet"])
    assert code == 0, out + err
    assert f"resuming {run} at iteration 6 on 2 Ray Train workers" in out and "iteration 7/8" not in out
    assert log_iterations(run) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert load_trained(run)[1].iteration == 8


@pytest.mark.slow
def test_interrupted_two_worker_run_resumes_bitwise(local_ray, tmp_path, capsys, monkeypatch):
    """A 2-worker run stopped after iteration 3 (checkpoint at 2) and resumed with the CLI ends
    with bitwise the weights of an uninterrupted 2-worker run."""
    from nasseg.shell.cli.main import build_parser
    from nasseg.shell.runner.distributed_train import run_distributed
    from nasseg.train.checkpoint import read_checkpoint
    from nasseg.shell.cli.train import load_config

    monkeypatch.chdir(tmp_path)
    argv = docs_train_argv()
    config = load_config(build_parser().parse_args(argv))
    run_distributed(config, tmp_path / "whole", 2, progress=False)
    assert run_distributed(config, tmp_path / "cut", 2, stop_at=3, progress=False) is None
    cut = tmp_path / "cut" / "icnet_resnet50"
    assert read_checkpoint(cut / "checkpoints" / "last.pt")["iteration"] == 2 and not (cut / "final.pt").exists()
    resume = [str(tmp_path / "cut") if a == "runs/train" else a for a in argv] + ["--resume"]
    code, out, err = nasseg(capsys, resume)
    assert code == 0, out + err
    assert f"resuming {cut} at iteration 2 on 2 Ray Train workers" in out
    assert "iteration 3/6  loss" in out and "iteration 2/6" not in out
    a, b = final_weights(tmp_path / "whole" / "icnet_resnet50"), final_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert log_iterations(cut) == [1, 2, 3, 4, 5, 6]  # iteration 3 logged once


@pytest.mark.slow
def test_killed_worker_restarts_from_the_checkpoint(local_ray, tmp_path):
    """SIGKILL a Ray Train worker after the checkpoint at iteration 4: Ray Train restarts the group
    (FailureConfig), the ranks continue from the checkpoint and end bitwise where an undisturbed
    run ends."""
    import threading

    from nasseg.shell.runner.distributed_train import run_distributed
    from nasseg.train.checkpoint import read_checkpoint
    from nasseg.train.config import parse_train_job

    job = {"model": "icnet_resnet50", "data": {"dataset": "camvid_demo", "size": [90, 120], "crop": [64, 64],
                                               "batch_size": 4},
           "iters": 10, "checkpoint_every": 2, "log_every": 1, "optim": {"warmup_iters": 2}}
    run_distributed(parse_train_job({**job, "name": "whole"}), tmp_path, 2, progress=False)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    killed: list[int] = []

    def kill_a_worker_after_iteration_4():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if read_checkpoint(last)["iteration"] >= 4:
                    break
            except Exception:  # not written yet
                pass
            time.sleep(0.05)
        workers = [pid for pid in processes_of("ray::RayTrainWorker") if descends_from(pid, os.getpid())]
        os.kill(workers[0], signal.SIGKILL)
        killed.append(workers[0])

    killer = threading.Thread(target=kill_a_worker_after_iteration_4, daemon=True)
    killer.start()
    result = run_distributed(parse_train_job({**job, "name": "killed"}), tmp_path, 2, progress=False)
    killer.join()
    assert killed and result["iterations"] == 10
    iterations = log_iterations(tmp_path / "killed")
    assert iterations == list(range(1, 11))  # rows after the checkpoint were written again, once
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_one_machine_walkthrough(local_ray, tmp_path, capsys, monkeypatch):
    """docs/ray.md "On one machine" (the embedded Ray is this module's), with tiny settings."""
    monkeypatch.chdir(tmp_path)
    lines = console_commands("## On one machine")
    assert len(lines) == 3
    for line in lines:
        argv = shlex.split(line.replace("jobs/", f"{REPO}/jobs/"))[1:]
        code, out, err = nasseg(capsys, argv + (TINY_SEARCH if argv[0] == "search" else []))
        assert code == 0, out + err
    assert (tmp_path / "runs" / "demo" / "seed0" / "arch.yaml").is_file()
    assert re.search(r"seed0\s+.*finished", out) and re.search(r"seed1\s+.*finished", out), out
    assert "±" in out  # mean ± std over the two seeds


def test_workers_must_split_the_batch(local_ray, tmp_path, capsys):
    code, _, err = nasseg(capsys, ["train", "icnet_resnet50", "--data", "camvid_demo", "--batch-size", "3",
                                   "--workers", "2", "--out", str(tmp_path)])
    assert code == 2 and "data.batch_size 3 does not split over 2 workers" in err
    code, _, err = nasseg(capsys, ["train", "icnet_resnet50", "--data", "camvid_demo", "--batch-size", "4",
                                   "--workers", "3", "--out", str(tmp_path)])
    assert code == 2 and "does not split over 3 workers" in err
    code, _, err = nasseg(capsys, ["train", "icnet_resnet50", "--data", "camvid_demo", "--batch-size", "8",
                                   "--workers", "4", "--out", str(tmp_path)])
    assert code == 2 and "4 workers need a CPU each, the cluster has 2" in err
