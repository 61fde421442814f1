"""A Ray cluster's Jobs API (the dashboard's HTTP port, 8265 by default) for ``nasseg submit``,
``status``, ``logs`` and ``stop``.

A submitted job uploads the project folder as the job's runtime_env ``working_dir`` and runs
``python -m nasseg search|train JOB.yaml ...`` there, so the cluster runs this checkout's code
(its Python needs nasseg's dependencies, not nasseg itself). Ray's own errors (connection refused,
HTTP 401/403/404 wrapped in RuntimeError, tracebacks) become one NassegError line each.

Token authentication (Ray's default for new clusters): the token Ray itself would use (found by
nasseg.shell.runner.auth) is sent as ``Authorization: Bearer ...``; every message is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from nasseg.errors import NassegError

from .auth import find_token, missing_token, rejected_token

DASHBOARD_PORT = 8265
GCS_PORT = 6379
CLIENT_PORT = 10001
# Never uploaded: environments, VCS data, outputs and weights (Ray also honours .gitignore/.rayignore)
UPLOAD_EXCLUDES = (".git", ".venv", "venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                   "*.pt", "*.pth", "*.ckpt", "*.onnx", "*.db", "tb")


def dashboard_address(address: str | None) -> str:
    """``--address`` / RAY_API_SERVER_ADDRESS / RAY_ADDRESS as an ``http(s)://host:port`` URL of
    the dashboard; GCS (HEAD:6379) and Ray Client (ray://HEAD:10001) addresses are explained."""
    given = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not given:
        raise NassegError("no Ray cluster given: pass --address http://HEAD:8265 (the dashboard of the head "
                          "node) or set RAY_API_SERVER_ADDRESS")
    text = given.strip().rstrip("/")
    expected = f"expected the Ray dashboard address http://HEAD:{DASHBOARD_PORT} (Jobs API)"
    if text.startswith("ray://"):
        raise NassegError(f"{safe_address(text)} is a Ray Client address; {expected}")
    if text in ("auto", "local"):
        raise NassegError(f"--address {text} names no dashboard; {expected}")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NassegError(f"{safe_address(given)} is not an address; {expected}")
    try:
        port = parts.port
    except ValueError:
        raise NassegError(f"{safe_address(given)}: bad port; {expected}") from None
    if port in (GCS_PORT, CLIENT_PORT):
        what = "the GCS port (what `nasseg search --address` and `ray start --address` take)" \
            if port == GCS_PORT else "the Ray Client port"
        raise NassegError(f"{safe_address(given)} is {what}; {expected}")
    return text if port or parts.scheme == "https" else f"{text}:{DASHBOARD_PORT}"  # https: a proxy, port 443


def safe_address(text: str) -> str:
    """An address (or a message) without user:password@ in its URLs."""
    return re.sub(r"//[^/@\s]*@", "//", text)


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """requests has no connect timeout by default: try the port once, quickly."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise NassegError(f"cannot reach the Ray dashboard at {safe_address(url)} ({exc.strerror or exc}); "
                          f"is the head node running (ray start --head, dashboard port {DASHBOARD_PORT} by "
                          "default) and that port reachable from here?") from None


class ClusterJobs:
    """The Jobs API of one cluster, with one-line errors and the token kept out of every message."""

    def __init__(self, address: str | None):
        self.address = dashboard_address(address)
        self.token = find_token()
        _check_reachable(self.address)
        headers = {"Authorization": f"Bearer {self.token.value}"} if self.token else {}
        from ray.job_submission import JobSubmissionClient

        # The SDK logs each package upload, each closed log stream and Ray's new default upload excludes
        # at INFO/WARNING; nasseg says what it uploads itself. After the import: the SDK sets its loggers'
        # levels when imported.
        for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                     "ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir"):
            logging.getLogger(name).setLevel(logging.ERROR)
        with self.errors():
            self.client = JobSubmissionClient(self.address, headers=headers)

    @contextlib.contextmanager
    def errors(self, job_id: str | None = None) -> Iterator[None]:
        """Ray's exceptions -> NassegError with one scrubbed line."""
        try:
            yield
        except NassegError:
            raise
        except Exception as exc:  # requests/aiohttp/Ray errors, all alike to the user
            raise NassegError(safe_address(self.scrub(self.explain(exc, job_id)))) from None

    def explain(self, exc: BaseException, job_id: str | None) -> str:
        text = " ".join(str(exc).split())
        where = f"the Ray cluster at {self.address}"
        name = type(exc).__name__
        if name == "AuthenticationError" or "status code 401" in text or "status code 403" in text:
            if "Forbidden" in text or "403" in text or "invalid" in text.lower():
                return rejected_token(where, self.token) + " in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            return missing_token(where)
        if "status code 404" in text and job_id is not None:
            return f"no job {job_id!r} on {where}; `nasseg status --address {self.address}` lists its jobs"
        if "already exists" in text and job_id is not None:
            return f"{where} already has a job {job_id!r}; choose another --job-id"
        if isinstance(exc, ConnectionError) or "Failed to connect" in text or "Connection" in name:
            return (f"cannot talk to the Ray dashboard at {self.address} ({_last_sentence(text)}); is that "
                    f"the dashboard port ({DASHBOARD_PORT} by default), not the GCS port {GCS_PORT}?")
        if "Version check returned 404" in text:
            return f"{self.address} answered, but is not a Ray dashboard (no Jobs API there)"
        return f"{where}: {_last_sentence(text) or name}"

    def scrub(self, text: str) -> str:
        return text.replace(self.token.value, "***") if self.token else text

    # --- the Jobs API ---------------------------------------------------------------------------

    def submit(self, entrypoint: str, working_dir: str | Path, submission_id: str | None,
               metadata: dict[str, str], excludes: list[str]) -> str:
        runtime_env = {"working_dir": str(working_dir), "excludes": excludes,
                       "env_vars": {"PYTHONUNBUFFERED": "1"}}  # logs stream as they are written
        with self.errors(submission_id):
            return self.client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                          submission_id=submission_id, metadata=metadata)

    def info(self, job_id: str) -> Any:
        with self.errors(job_id):
            return self.client.get_job_info(job_id)

    def jobs(self) -> list[Any]:
        with self.errors():
            return sorted(self.client.list_jobs(), key=lambda job: job.start_time or 0)

    def logs(self, job_id: str) -> str:
        with self.errors(job_id):
            return self.scrub(self.client.get_job_logs(job_id))

    def follow(self, job_id: str) -> Iterator[str]:
        """The job's log from its start, chunk by chunk, until the job ends (tail_job_logs)."""
        self.info(job_id)  # an unknown id fails here with one line, not inside the websocket
        loop = asyncio.new_event_loop()
        stream = self.client.tail_job_logs(job_id)
        try:
            while True:
                with self.errors(job_id):
                    try:
                        chunk = loop.run_until_complete(stream.__anext__())
                    except StopAsyncIteration:
                        return
                yield self.scrub(chunk)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(stream.aclose())
            loop.close()

    def stop(self, job_id: str) -> bool:
        with self.errors(job_id):
            return self.client.stop_job(job_id)


def _last_sentence(text: str) -> str:
    return text.strip().rstrip(".").split("\n")[-1][:300]
