"""A search run's record of where and how it ran: ``<run dir>/trial.json``.

    {"experiment": "demo", "trial_id": "...", "seed": 0,
     "overrides": {"epochs": 2},           # what differs from the job file (--set) and HPO's samples
     "job_digest": "...",
     "placements": [                        # one per (re)start of the run, in order
        {"node_id": "3f2a...", "node_ip": "10.0.0.5", "host": "gpu-1", "pid": 4242, "threads": 1,
         "started": "2026-01-01T10:00:00", "from_epoch": 0, "last_epoch": 1},
        {"node_id": "9bc1...", ..., "from_epoch": 1, "last_epoch": 3}]}

A Ray trial records its Ray node id (several nodes can share one host and IP); a ``--no-ray`` run
has none (``node_id`` null). ``from_epoch`` is the checkpoint a start continued from and
``last_epoch`` the last epoch it finished, so every epoch's node can be read off.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from nasseg.io import atomic_write_text, read_json_object
from nasseg.search.rundir import RunDir

from .experiment import TRIAL_FILE


def read_optional(path: Path, what: str) -> dict[str, Any]:
    """A JSON object nasseg wrote, {} while the file does not exist."""
    return read_json_object(path, what) if path.exists() else {}


def read_record(run: RunDir) -> dict[str, Any]:
    return read_optional(run.file(TRIAL_FILE), "a trial record (experiment, trial id, seed, overrides, placements)")


def placements(record: dict[str, Any]) -> list[dict[str, Any]]:
    found = record.get("placements")
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def current_node() -> tuple[str, str]:
    """(Ray node id, node IP) of this Ray worker process."""
    import ray

    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


class RunRecord:
    """Writes trial.json: the run's identity once per start, its placement history kept across
    restarts (a restarted trial, ``--resume``), the last finished epoch after every epoch."""

    def __init__(self, run: RunDir):
        self.run = run
        self.data: dict[str, Any] = {}

    def start(self, identity: dict[str, Any], from_epoch: int, threads: int,
              node: tuple[str | None, str | None] = (None, None)) -> dict[str, Any]:
        """Record a (re)start; ``identity``: experiment, trial id, seed, overrides, job digest;
        ``node``: (Ray node id, IP) of a trial (see current_node). Returns the new placement."""
        history = placements(read_record(self.run))
        node_id, node_ip = node
        placement = {"node_id": node_id, "node_ip": node_ip, "host": socket.gethostname(), "pid": os.getpid(),
                     "threads": threads, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "from_epoch": from_epoch, "last_epoch": from_epoch}
        self.data = {**identity, "placements": [*history, placement]}
        self._write()
        return placement

    def epoch_done(self, epoch: int) -> None:
        self.data["placements"][-1]["last_epoch"] = epoch
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.run.file(TRIAL_FILE), json.dumps(self.data, indent=2))


def node_alive(node_id: str, timeout: float = 1.0) -> bool:
    """Whether a Ray node is alive: the GCS counts it alive and its raylet accepts a connection. The
    GCS declares a node dead only after several missed health checks (~15 s by default), while a
    trial on it fails at once: asking the raylet tells a lost node from a dead worker process."""
    import ray

    node = next((n for n in ray.nodes() if n.get("NodeID") == node_id), None)
    if node is None or not node.get("Alive"):
        return False
    try:
        socket.create_connection((node["NodeManagerAddress"], int(node["NodeManagerPort"])), timeout).close()
    except (OSError, KeyError, ValueError):
        return False
    return True


def node_label(placement: dict[str, Any]) -> str:
    """'3f2a91c0 (10.0.0.5)': the start of a placement's Ray node id, and its IP."""
    ip = placement.get("node_ip")
    return short_node(placement.get("node_id")) + (f" ({ip})" if ip else "")


def short_node(node_id: str | None) -> str:
    """The first 8 hex digits of a Ray node id (as `ray list nodes` ids start)."""
    return (node_id or "-")[:8]


def node_history(record: dict[str, Any]) -> list[str]:
    """The node ids a run ran on, in order, consecutive repeats merged."""
    return [node for node, _ in itertools.groupby(str(p["node_id"]) for p in placements(record) if p.get("node_id"))]
