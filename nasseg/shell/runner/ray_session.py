"""Connecting to Ray: an embedded local instance by default, a cluster with ``--address``/RAY_ADDRESS.

The embedded instance is started quietly (no dashboard, no worker log forwarding: trials report
through Tune, and their stdout is only tqdm noise) and shut down again when the command ends. A
cluster's token is used as ``ray start`` uses it (nasseg.shell.runner.auth); Ray's own messages are
one plain line each (nasseg.shell.runner.console).
When Ray is already initialised (a notebook, the tests) it is reused and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from typing import Iterator

from nasseg.errors import NassegError
from nasseg.search.config import ResourcesConfig

from .auth import Token, find_token, missing_token, rejected_token, use_cluster_token
from .console import plain_ray_console, quiet_auth_retries

# Small: trials pass file paths and a few numbers through Ray, never tensors.
EMBEDDED_OBJECT_STORE_BYTES = 256 * 1024 * 1024


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a command; ``address`` (or RAY_ADDRESS) attaches to a cluster."""
    import ray

    # Tune's new console output and Ray's own INFO lines would bury the per-epoch lines
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a checkpoint per epoch of short epochs triggers a "snapshotting may become a bottleneck" warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and num_cpus is not None:
        raise NassegError("--num-cpus sizes the embedded local Ray; a cluster given by --address or "
                          "RAY_ADDRESS has its own CPUs (drop --num-cpus)")
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=False, log_to_driver=False)
    with plain_ray_console():
        try:
            if address:
                check_reachable(address)
                use_cluster_token()  # RAY_AUTH_MODE=token when a token is at hand, as `ray start` does
                with quiet_auth_retries():
                    check_token(address)
                    ray.init(address=address, **kwargs)
            else:
                # the embedded instance creates its own token; the notice about it is not news to the user
                logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,  # never a stray `ray start`
                         object_store_memory=EMBEDDED_OBJECT_STORE_BYTES, **kwargs)
        except ConnectionError as exc:
            raise NassegError(connect_error(address, exc, find_token())) from None
        try:
            yield
        finally:
            ray.shutdown()


def connect_error(address: str, exc: ConnectionError, token: Token | None) -> str:
    """One line for a failed attach; the token's value is never shown."""
    cause = f"{exc} {exc.__cause__ or ''}"
    if "InvalidAuthToken" in cause or "Unauthenticated" in cause:
        where = f"the Ray cluster at {address}"
        return missing_token(where) if token is None else rejected_token(where, token)
    hint = ("; if the cluster uses token authentication (the default of recent Ray), provide its token in "
            "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token") if token is None else ""
    return f"cannot connect to the Ray cluster at {address}: {exc}{hint}"


def host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for "auto", "local" and the
    like, which Ray resolves itself."""
    match = re.fullmatch(r"(?:ray://)?\[?([\w.:-]+?)\]?:(\d+)", address.strip())
    return (match.group(1), int(match.group(2))) if match else None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Ray retries an unreachable GCS for minutes, logging as it goes: try the port once first."""
    if (where := host_and_port(address)) is None:
        return
    host, port = where
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise NassegError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is the head "
                          "node running (ray start --head) and the port open?") from None


def check_token(address: str) -> None:
    """Ray's driver retries a rejected token for ~20 s before ``ray.init`` gives up; one request to the
    GCS (a client asking for the cluster id) is refused at once. Only a ``HOST:PORT`` address is asked
    (a ``ray://`` address is the Ray Client server, not the GCS); any failure other than the token's is
    left to ``ray.init`` to report."""
    if address.startswith("ray://") or host_and_port(address) is None:
        return
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # another Ray version: ray.init reports a rejected token itself, slowly
        return
    try:
        GcsClient(address=address.strip())
    except AuthenticationError as exc:
        raise NassegError(connect_error(address, ConnectionError(str(exc)), find_token())) from None
    except Exception:  # noqa: BLE001 - not ours to report: ray.init tries the same address next
        return


def check_resources(resources: ResourcesConfig, job_file: str | None, device: str = "auto") -> None:
    """Fail fast instead of leaving a trial PENDING forever on a cluster that can never fit it."""
    import ray

    total = ray.cluster_resources()
    where = job_file or "the job file"
    needs = (("CPU", "CPUs", resources.cpus), ("GPU", "GPUs", resources.gpus))
    for key, name, need in needs:
        if need > total.get(key, 0.0):
            raise NassegError(f"trial needs {need:g} {name}, the cluster has {total.get(key, 0.0):g} in total; "
                              f"lower resources.{name.lower()} in {where}" + " (0 runs on CPU)" * (key == "GPU"))
    largest = largest_node()  # a trial is one process: its CPUs and GPUs must be on one node
    for key, name, need in needs:
        if need > largest.get(key, 0.0):
            raise NassegError(f"trial needs {need:g} {name} on one node, the largest node of the cluster has "
                              f"{largest.get(key, 0.0):g} ({total.get(key, 0.0):g} in total); lower "
                              f"resources.{name.lower()} in {where}")
    if device.startswith("cuda") and resources.gpus == 0:
        raise NassegError(f"device {device!r} needs a GPU, but a trial reserves none; set resources.gpus: 1 "
                          f"in {where} (Ray hides GPUs from trials that did not reserve one)")


def largest_node(excluding: str | None = None) -> dict[str, float]:
    """The most CPUs and the most GPUs any one alive node has (leaving out node ``excluding``)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive") and n.get("NodeID") != excluding]
    return {key: max((n.get(key, 0.0) for n in nodes), default=0.0) for key in ("CPU", "GPU")}


def torch_threads(resources: ResourcesConfig, overlap: bool = False) -> int:
    """Intra-op threads for a trial: its CPU share, halved with ``hessian.overlap`` (two threads run torch
    ops then, the training and the eigenvalue). More threads than reserved cores made torch 20-40x
    slower here (OpenMP oversubscription) when two trials shared two cores."""
    return max(1, int(resources.cpus) // (2 if overlap else 1))
