"""What a nasseg driver prints of Ray's own messages: one plain line each, none about lost nodes.

Ray's driver prints every error message the cluster publishes (``(raylet) ...``, coloured, even into
a file). When a node dies, its agents publish "Raylet is terminated ..." with the last 20 lines of the
raylet's log ([state-dump] tables) and the GCS publishes "... has been marked dead ...": ~40 lines
for one event, which the trial that lost its node already reports in one line of its own
(:class:`~nasseg.shell.runner.tune_search.EpochLines`). Here the node-death messages are dropped
and every other message becomes its first line, ``ray: ...``, on stderr, without colour codes.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Any, Iterator

# what Ray's C++ GCS client logs per attempt while a cluster refuses the token (one a second for ~20 s)
AUTH_RETRY = ("gcs_client", "InvalidAuthToken")
# Ray's messages about a node that died: reported per trial by nasseg instead
NODE_DEATH = ("Raylet is terminated", "has been marked dead because")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@contextlib.contextmanager
def plain_ray_console() -> Iterator[None]:
    """While Ray runs for a command: Ray's published errors filtered (its driver-side printer is
    wrapped, and restored afterwards), and Ray's colour prefixes off when stdout is not a terminal."""
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:  # another Ray version: its messages pass unfiltered
        yield
        return

    def print_messages(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        if data.get("pid") != "raylet":  # forwarded worker output (log_to_driver), not a published error
            original(data, ignore_prefix)
            return
        for line in data.get("lines", []):
            text = ANSI.sub("", str(line)).strip()
            if text and not any(marker in text for marker in NODE_DEATH):
                print("ray: " + text.splitlines()[0].strip(), file=sys.stderr, flush=True)

    ray_worker.print_to_stdstream = print_messages
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


@contextlib.contextmanager
def quiet_auth_retries() -> Iterator[None]:
    """While attaching to a cluster: Ray's C++ client writes its retry warnings straight to file
    descriptor 2, past Python's logging. Hold what reaches fd 2 (an anonymous temporary file), then
    pass it on without those lines: a rejected token becomes the one line of the error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not all(marker in line for marker in AUTH_RETRY)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
