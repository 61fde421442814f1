"""Where runs live when they run on Ray: the output folder (``--out``) is also Ray's storage.

Trials and Ray Train workers write their run directories with ordinary file operations (atomic
renames, appends) from whichever node they run on, and Ray Tune / Ray Train keep their checkpoints
and experiment state under the same folder (``storage_path``). So on a cluster ``--out`` must be a
POSIX folder that every node mounts at the same path (NFS, CephFS, Lustre, ...). URIs such as
``s3://`` are refused: the run directories are not written through pyarrow's filesystems. Nothing
is written outside ``--out``: the copy a checkpoint is reported from is staged next to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nasseg.errors import NassegError

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_out_path(out: str | Path) -> None:
    """One line for an ``--out`` that is a URI (s3://, gs://, hdfs://, file://...)."""
    text = str(out)
    if URI.match(text):
        raise NassegError(f"--out {text}: nasseg writes run directories as ordinary files and takes a folder, not "
                          "a URI; on a cluster give a folder every node mounts at the same path (NFS, a "
                          "cluster filesystem), see docs/ray.md")


@contextlib.contextmanager
def staged(file: Path) -> Iterator[Path]:
    """A temporary folder beside ``file`` holding it (a hard link, a copy where links fail), to be
    reported to Ray as a checkpoint; removed afterwards. Beside it, not in /tmp: the data stays
    on the run's storage."""
    with tempfile.TemporaryDirectory(prefix=".report-", dir=file.parent) as folder:
        target = Path(folder) / file.name
        try:
            os.link(file, target)
        except OSError:
            shutil.copy2(file, target)
        yield Path(folder)
