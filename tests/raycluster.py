"""Real Ray clusters on this machine for the tests: a token-authenticated head (`ray start --head`)
and worker nodes (`ray start --address`), each on free ports with its own temp dir, stopped by their
own process ids (never `ray stop`, which would end every Ray on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Cluster:
    address: str  # the dashboard (Jobs API), http://127.0.0.1:PORT
    gcs: str  # 127.0.0.1:PORT
    token: str
    temp_dir: Path


@dataclass(frozen=True)
class Node:
    """A worker node started with `ray start --address`: its raylet listens on node_manager_port."""
    temp_dir: Path
    node_manager_port: int
    markers: tuple[str, ...]
    node_id: str


def free_port() -> int:
    """A free port outside Ray's default worker port range (10002-19999)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not 10000 <= port <= 20000:
            return port


def processes_of(*markers: str) -> list[int]:
    """Ids of the processes whose command line holds every string of one marker (the cluster's temp
    dir; the Ray Client server's port, its command line names no temp dir), and of all their
    descendants (workers, job drivers)."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = parent_of(int(entry.name))
            if any(all(part in command_line(int(entry.name)) for part in marker.split("|")) for marker in markers):
                found.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    changed = True
    while changed:
        new = {pid for pid, parent in parents.items() if parent in found and pid not in found}
        found |= new
        changed = bool(new)
    return sorted(found - {os.getpid()})


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` is a (grand...)child of ``ancestor`` (this test's own Ray, not another's)."""
    while pid > 1:
        try:
            pid = parent_of(pid)
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


def stop_cluster(*markers: str) -> None:
    """SIGTERM, then SIGKILL, the cluster's own processes."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = processes_of(*markers)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline and processes_of(*markers):
            time.sleep(0.2)


def node_env(token: str, **extra: str) -> dict[str, str]:
    """The environment of `ray start` on a token-authenticated cluster, as after
    `source .venv/bin/activate`."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def ray_start(arguments: Callable[[Path], tuple[list[str], tuple[str, ...]]], env: dict[str, str]
              ) -> tuple[Path, tuple[str, ...]]:
    """`ray start` with ``arguments(temp_dir)`` (its arguments and process markers): the temp dir
    and markers. Tried again on fresh ports when it fails: another test process (pytest-xdist runs
    two) may bind a port between free_port() and Ray's own bind. A failed or timed-out start leaves
    no process behind."""
    failures = []
    for _ in range(3):
        temp_dir = Path(tempfile.mkdtemp(prefix="nrc", dir="/tmp"))  # short: Ray's socket paths are limited
        args, markers = arguments(temp_dir)
        started = None
        try:
            started = subprocess.run([str(VENV_BIN / "ray"), "start", *args, f"--temp-dir={temp_dir}",
                                      "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
        finally:
            if started is None or started.returncode != 0:
                stop_cluster(*markers)
                shutil.rmtree(temp_dir, ignore_errors=True)
        if started.returncode == 0:
            return temp_dir, markers
        failures.append(started.stdout + started.stderr)
    raise AssertionError("ray start failed 3 times:\n" + "\n".join(failures))


def start_head(token: str, num_cpus: int = 2, env: dict[str, str] | None = None
               ) -> tuple[Cluster, tuple[str, ...]]:
    """`ray start --head` with token authentication on free ports, and the markers of its processes."""
    ports = {}

    def arguments(temp_dir: Path) -> tuple[list[str], tuple[str, ...]]:
        ports.update(gcs=free_port(), dashboard=free_port(), client=free_port())
        markers = (str(temp_dir), f"ray.util.client.server|--port={ports['client']} ")
        return ["--head", "--node-ip-address=127.0.0.1", f"--port={ports['gcs']}",
                f"--dashboard-port={ports['dashboard']}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                f"--ray-client-server-port={ports['client']}", f"--dashboard-agent-listen-port={free_port()}",
                f"--num-cpus={num_cpus}"], markers

    temp_dir, markers = ray_start(arguments, env or node_env(token))
    return Cluster(f"http://127.0.0.1:{ports['dashboard']}", f"127.0.0.1:{ports['gcs']}", token, temp_dir), markers


def start_node(cluster: Cluster, num_cpus: int, env: dict[str, str] | None = None) -> Node:
    """A worker node (`ray start --address=HEAD`) with ``num_cpus`` CPUs, every port its own."""
    ports = {}

    def arguments(temp_dir: Path) -> tuple[list[str], tuple[str, ...]]:
        ports["node_manager"] = free_port()
        return [f"--address={cluster.gcs}", "--node-ip-address=127.0.0.1",
                f"--node-manager-port={ports['node_manager']}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--num-cpus={num_cpus}"], (str(temp_dir),)

    temp_dir, markers = ray_start(arguments, env or node_env(cluster.token))
    return Node(temp_dir, ports["node_manager"], markers, node_id_of(temp_dir))


def kill_raylet_and_workers(node: Node) -> list[int]:
    """SIGKILL a node's raylet and its worker processes (`ray::...`), as when the machine's OOM
    killer or an operator takes the raylet down; its agents live on and report the death."""
    port = f"--node_manager_port={node.node_manager_port}"
    raylets = [pid for pid in processes_of(*node.markers)
               if "/raylet " in command_line(pid) and port in command_line(pid)]
    assert len(raylets) == 1, f"raylet of {node} not found"
    workers = [pid for pid in processes_of(*node.markers) if parent_of(pid) == raylets[0]
               and command_line(pid).startswith("ray::")]
    for pid in [raylets[0], *workers]:
        os.kill(pid, signal.SIGKILL)
    return [raylets[0], *workers]


def node_id_of(temp_dir: Path) -> str:
    """The Ray node id of the node started with ``temp_dir``: Ray names its per-node port files
    in the session folder after it."""
    names = [p.name for p in (temp_dir / "session_latest").glob("metrics_export_port_*")]
    assert len(names) == 1, f"{temp_dir}: expected one node's files, found {names}"
    return names[0].removeprefix("metrics_export_port_")
