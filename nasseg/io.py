"""nasseg's files on disk: atomic writes (a crash mid-write never leaves a truncated checkpoint or
spec behind) and reads that fail with one line naming the file (JSON, CSV tables, checkpoints).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, IO

from .errors import NassegError

if TYPE_CHECKING:
    import pandas as pd


def _umask() -> int:
    """The process umask, read without os.umask's set-and-restore race where Linux allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(fileobj)`` into a temp file in the same folder, fsync, then rename.

    The file gets the permissions a plain ``open(path, "w")`` would give (mkstemp makes 0600)."""
    path = Path(path)
    if path.is_dir():
        raise NassegError(f"{path}: is a directory; expected a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # the folder cannot be made or written: a file in its place, read-only, /proc
        raise NassegError(f"{path}: cannot write here ({e.strerror or _short(e)}: {e.filename or path.parent})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


# --- reading -------------------------------------------------------------------------------------

def _short(error: BaseException, first_sentence: bool = False) -> str:
    """An exception's message on one line (only its first sentence), at most 160 characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return (text.split(". ")[0] if first_sentence else text)[:160]


def read_bytes(path: str | Path, what: str) -> bytes:
    """The file's bytes; a missing or unreadable file is a NassegError naming it."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # reading a FIFO or a device blocks
        raise NassegError(f"{path}: not a regular file (a FIFO, socket or device); expected {what}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NassegError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise NassegError(f"{path}: is a directory, expected {what}") from None
    except OSError as e:
        raise NassegError(f"{path}: cannot read {what} ({e.strerror or _short(e)})") from None


def read_text(path: str | Path, what: str) -> str:
    try:
        return read_bytes(path, what).decode()
    except UnicodeDecodeError as e:
        raise NassegError(f"{path}: not text (byte {e.start} is not UTF-8); expected {what}") from None


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file (``what`` says what it should hold, for messages)."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise NassegError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}; "
                          f"a truncated or edited file?); expected {what}") from None


def read_json_object(path: str | Path, what: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON file holding an object with the ``required`` keys."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise NassegError(f"{path}: holds a JSON {type(data).__name__}; expected {what} (an object)")
    missing = [key for key in required if key not in data]
    if missing:
        raise NassegError(f"{path}: no {', '.join(map(repr, missing))} in it; expected {what}")
    return data


def read_csv(path: str | Path, what: str, numeric: Sequence[str] = ()) -> "pd.DataFrame":
    """A CSV table whose ``numeric`` columns exist and hold numbers (empty cells become NaN)."""
    import pandas as pd

    data = read_bytes(path, what)
    try:
        table = pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise NassegError(f"{path}: empty file; expected {what}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise NassegError(f"{path}: not a readable CSV table ({_short(e)}); expected {what}") from None
    for column in numeric:
        if column not in table.columns:
            raise NassegError(f"{path}: no column {column!r} (columns: {', '.join(map(str, table.columns))}); "
                              f"expected {what}")
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(bad.idxmax())
            raise NassegError(f"{path}: row {row + 1}, column {column!r}: {table[column].iloc[row]!r} is not "
                              f"a number; expected {what}")
        table[column] = values
    return table


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_tensors(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of a file, failures as one line naming it.

    A file holding more than tensors and plain containers is refused without running any of it;
    the message says so plainly (torch's own suggests turning the safety off)."""
    import pickle

    import torch

    data = read_bytes(path, what)
    if not data:
        raise NassegError(f"{path}: empty file; expected {what}")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            found = _GLOBAL.search(str(e))
            holds = f" ({found.group(1)})" if found else ""
            raise NassegError(f"{path}: refused: it holds Python objects other than tensors{holds}, and "
                              "loading those could run code; it was not loaded (nasseg reads a "
                              f"{what} with torch.load(weights_only=True) only)") from None
        raise NassegError(f"{path}: not a readable {what} ({_short(e, first_sentence=True)})") from None
    except Exception as e:  # zip/pickle errors of a truncated or foreign file; torch adds advice after
        raise NassegError(f"{path}: not a readable {what} (truncated, or not a PyTorch file: "
                          f"{_short(e, first_sentence=True)})") from None
