"""``nasseg submit | status | logs | stop``: jobs on a Ray cluster through its Jobs API.

``nasseg.shell.cli.main`` wires them in with :func:`add_cluster_parsers`. Ray is imported only when a command
talks to a cluster, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from nasseg.config import load_yaml
from nasseg.errors import NassegError
from nasseg.search import load_job
from nasseg.train.config import is_train_job, load_train_job

from .args import seed_value

ADDRESS_HELP = "the cluster's dashboard, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS)"
TOKEN_NOTE = ("Clusters with token authentication: the token is read from RAY_AUTH_TOKEN, the file named by "
              "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, and never printed.")


def add_cluster_parsers(subparsers) -> None:
    address = argparse.ArgumentParser(add_help=False)
    address.add_argument("--address", default=None, metavar="URL", help=ADDRESS_HELP)
    submit = subparsers.add_parser(
        "submit", parents=[address],
        help="run a search / HPO / training job on a Ray cluster (Ray Jobs API)",
        description="Upload the project folder (--working-dir, default: the current folder; without .git, .venv, "
                    "runs/, weights) and run `python -m nasseg search JOB.yaml` (or `train` for a training "
                    "job) there as a Ray job. Prints the job id and how to follow it. The job writes its runs to "
                    "--out on the cluster: an absolute path, which on a multi-node cluster must be a shared "
                    "filesystem. " + TOKEN_NOTE,
        epilog="Example: nasseg submit jobs/demo.yaml --address http://HEAD:8265 --out /shared/runs --follow")
    submit.add_argument("job", metavar="JOB.yaml", help="a search, HPO or training job inside --working-dir")
    submit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key (repeatable), as for nasseg search / train")
    submit.add_argument("--out", default=None, metavar="DIR",
                        help="where the job writes its runs, on the cluster (default: ./runs, or ./runs/train for "
                             "training jobs, made absolute)")
    submit.add_argument("--job-id", default=None, metavar="ID",
                        help="the job's submission id (default: nasseg-<job name>-<date>-<time>)")
    submit.add_argument("--working-dir", default=".", metavar="DIR",
                        help="the folder uploaded as the job's working directory (default: the current one)")
    submit.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="also leave these paths out of the upload (gitignore syntax, repeatable)")
    submit.add_argument("--python", default="python", metavar="EXE",
                        help="the cluster's Python with nasseg's dependencies (default: python on the PATH "
                             "of `ray start`)")
    submit.add_argument("--resume", action="store_true", help="pass --resume to the job's command")
    submit.add_argument("--restart", action="store_true", help="pass --restart to the job's command")
    submit.add_argument("--seed", type=seed_value, default=None, help="search jobs: run only this seed")
    submit.add_argument("--workers", type=int, default=None, metavar="N",
                        help="training jobs: data-parallel training on N Ray Train workers")
    wait = submit.add_mutually_exclusive_group()
    wait.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    wait.add_argument("--follow", action="store_true",
                      help="stream the job's log until it ends; exit status 0 only if it SUCCEEDED")
    submit.set_defaults(run=cmd_submit)

    status = subparsers.add_parser(
        "status", parents=[address], help="status of a job on a Ray cluster, or a table of its jobs",
        description="With JOB_ID: status, message, command, start and end time. Without: one row per job. "
                    + TOKEN_NOTE)
    status.add_argument("job_id", nargs="?", default=None, metavar="JOB_ID")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=cmd_status)

    logs = subparsers.add_parser("logs", parents=[address], help="the log of a job on a Ray cluster",
                                 description="Print the job's log (stdout and stderr of its command). " + TOKEN_NOTE)
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="stream it until the job ends; exit status 0 only if it SUCCEEDED")
    logs.set_defaults(run=cmd_logs)

    stop = subparsers.add_parser("stop", parents=[address], help="stop a job on a Ray cluster",
                                 description="Ask the job to stop (SIGTERM, then SIGKILL) and wait until it has. "
                                             "A stopped search continues with `nasseg submit JOB --resume`. "
                                             + TOKEN_NOTE)
    stop.add_argument("job_id", metavar="JOB_ID")
    stop.add_argument("--no-wait", action="store_true", help="return without waiting for the job to stop")
    stop.set_defaults(run=cmd_stop)


def job_command(args: argparse.Namespace) -> tuple[list[str], str, dict[str, str], str | None]:
    """The job's command line (argv), the job name, the job's metadata and a note for the user;
    the job file is checked here, before anything is uploaded."""
    job = Path(args.job)
    if not job.is_file():
        raise NassegError(f"{args.job}: job file not found")
    working_dir = Path(os.path.abspath(args.working_dir))  # symlinks kept: the job runs as the user named it
    if not working_dir.is_dir():
        raise NassegError(f"--working-dir {args.working_dir}: not a folder")
    try:
        relative = Path(os.path.abspath(job)).relative_to(working_dir).as_posix()
    except ValueError:
        raise NassegError(f"{args.job} is outside the uploaded folder {working_dir}; move it there or pass "
                          "--working-dir") from None
    command = "train" if is_train_job(job) else "search"
    name, data_folder = _check_job(job, command, args.set)
    if command == "search" and args.workers is not None:
        raise NassegError("--workers applies to training jobs; a search job's parallelism is its seeds/trials")
    if command == "train" and args.seed is not None:
        raise NassegError("--seed applies to search jobs; set a training job's seed with --set seed=N")
    out = Path(args.out or ("runs/train" if command == "train" else "runs")).expanduser().resolve()
    argv = [args.python, "-m", "nasseg", command, relative, "--out", str(out)]
    argv += [word for item in args.set for word in ("--set", item)]
    argv += ["--resume"] * args.resume + ["--restart"] * args.restart
    for flag, value in (("--seed", args.seed), ("--workers", args.workers)):
        argv += [flag, str(value)] if value is not None else []
    metadata = {"nasseg_command": command, "job_file": relative, "out": str(out), "name": name}
    note = (f"the job's data folder {data_folder} is relative: on the cluster it is looked up in the uploaded copy "
            "of the project; give an absolute path on the cluster instead") \
        if data_folder and not Path(data_folder).is_absolute() else None
    return argv, name, metadata, note


def _check_job(job: Path, command: str, overrides: list[str]) -> tuple[str, str | None]:
    """Parses the job as the cluster will (one-line errors now, not after the upload); its name
    and its data folder."""
    if command == "train":
        config = load_train_job(job, overrides)
        return config.name, config.data.root
    from ..runner.hpo import is_hpo_job, load_hpo_job
    from ..runner.study import load_study_job

    data = load_yaml(job)
    if is_hpo_job(data) or data.get("kind") == "study":
        outer = (load_hpo_job if is_hpo_job(data) else load_study_job)(job, overrides)
        return outer.name, outer.search.data.root
    config = load_job(job, overrides)
    return config.name, config.data.root


TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STARTUP_GRACE_S = 5.0  # how long submit watches a started job for an immediate failure


def cmd_submit(args: argparse.Namespace) -> int:
    from ..runner.jobs_api import UPLOAD_EXCLUDES, ClusterJobs, safe_address

    argv, name, metadata, note = job_command(args)
    jobs = ClusterJobs(args.address)
    job_id = args.job_id or f"nasseg-{name}-{datetime.now():%Y%m%d-%H%M%S}"
    working_dir = Path(os.path.abspath(args.working_dir))
    excludes = [*UPLOAD_EXCLUDES, *args.exclude]
    print(f"uploading {working_dir} (without {', '.join(excludes)}) to {safe_address(jobs.address)}", flush=True)
    entrypoint = shlex.join(argv)
    job_id = jobs.submit(entrypoint, working_dir, job_id, metadata, excludes)
    hint = "" if args.address is None else f" --address {safe_address(args.address)}"
    print(f"submitted job {job_id}: {entrypoint}")
    print(f"its runs go to {metadata['out']}/{name} on the cluster (shared storage on a multi-node cluster)")
    if note:
        print(f"note: {note}")
    print(f"  follow:  nasseg logs {job_id}{hint} --follow\n  status:  nasseg status {job_id}{hint}\n"
          f"  stop:    nasseg stop {job_id}{hint}", flush=True)
    if args.no_wait:
        return 0
    if args.follow:
        return follow_job(jobs, job_id)
    info = wait_for(jobs, job_id, until=lambda s: s != "PENDING", timeout=300)
    if str(info.status) == "RUNNING":  # a broken entrypoint shows RUNNING for a moment before FAILED
        info = wait_for(jobs, job_id, until=lambda s: s in TERMINAL, timeout=STARTUP_GRACE_S)
    print(f"job {job_id}: {info.status}", flush=True)
    if info.status in ("FAILED", "STOPPED"):
        tail = jobs.logs(job_id).strip().splitlines()[-15:]
        sys.stderr.write("\n".join(tail) + ("\n" if tail else ""))
        raise NassegError(f"job {job_id} {info.status}: {one_line(info.message)}")
    return 0


def wait_for(jobs: Any, job_id: str, until, timeout: float, interval: float = 1.0) -> Any:
    """Poll the job until ``until(status)``, at most ``timeout`` seconds; its last info."""
    deadline = time.monotonic() + timeout
    while True:
        info = jobs.info(job_id)
        if until(str(info.status)) or time.monotonic() > deadline:
            return info
        time.sleep(interval)


def follow_job(jobs: Any, job_id: str) -> int:
    """Stream the log until the job ends; 0 if it SUCCEEDED, else 1 with its status line."""
    try:
        for chunk in jobs.follow(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running (nasseg stop {job_id} ends it)", file=sys.stderr)
        return 130
    info = wait_for(jobs, job_id, until=lambda s: s in TERMINAL, timeout=30)
    line = f"job {job_id} {info.status}" + (f": {one_line(info.message)}" if info.message else "")
    if str(info.status) == "SUCCEEDED":
        print(line)
        return 0
    print(f"nasseg: {line}", file=sys.stderr)
    return 1


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:500]


def job_record(info: Any) -> dict[str, Any]:
    """The fields of a JobDetails that matter here, with readable times."""
    record = {"job_id": info.submission_id or info.job_id, "status": str(info.status),
              "message": info.message, "entrypoint": info.entrypoint,
              "start_time": _time(info.start_time), "end_time": _time(info.end_time),
              "duration_s": round((info.end_time - info.start_time) / 1000, 1)
              if info.start_time and info.end_time else None,
              "metadata": dict(info.metadata or {})}
    if info.error_type:
        record["error_type"] = str(info.error_type)
    return record


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else None


def cmd_status(args: argparse.Namespace) -> int:
    from ..runner.jobs_api import ClusterJobs

    jobs = ClusterJobs(args.address)
    data = job_record(jobs.info(args.job_id)) if args.job_id else [job_record(info) for info in jobs.jobs()]
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.job_id:
        labels = {"job_id": "job", "status": "status", "message": "message", "entrypoint": "command",
                  "start_time": "started", "end_time": "ended", "duration_s": "seconds"}
        for key, label in labels.items():
            if data.get(key) is not None:
                print(f"{label:<8} {data[key]}")
    elif not data:
        print("no jobs on the cluster")
    else:
        print(format_table(data))
    return 0


def format_table(records: list[dict[str, Any]]) -> str:
    rows = [("JOB", "STATUS", "STARTED", "SECONDS", "COMMAND")]
    for r in records:
        command = re.sub(r"^\S+ -m nasseg\.cli ", "nasseg ", r["entrypoint"] or "")
        rows.append((str(r["job_id"]), r["status"], r["start_time"] or "-",
                     "-" if r["duration_s"] is None else f"{r['duration_s']:g}",
                     command if len(command) <= 70 else command[:67] + "..."))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)


def cmd_logs(args: argparse.Namespace) -> int:
    from ..runner.jobs_api import ClusterJobs

    jobs = ClusterJobs(args.address)
    if args.follow:
        return follow_job(jobs, args.job_id)
    sys.stdout.write(jobs.logs(args.job_id))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from ..runner.jobs_api import ClusterJobs

    jobs = ClusterJobs(args.address)
    if not jobs.stop(args.job_id):
        print(f"job {args.job_id} is already {jobs.info(args.job_id).status}; nothing to stop")
        return 0
    if args.no_wait:
        print(f"asked job {args.job_id} to stop")
        return 0
    info = wait_for(jobs, args.job_id, until=lambda s: s in TERMINAL, timeout=60)
    print(f"job {args.job_id}: {info.status}")
    return 0 if str(info.status) in TERMINAL else 1
