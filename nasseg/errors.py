"""One exception type for every user-facing error.

The command line catches :class:`NassegError` and prints its message as a single line
(no traceback), so messages must say what is wrong, where, and what was expected.
"""

from __future__ import annotations

import re


class NassegError(Exception):
    """A problem with the user's input (file, option, data) that the user can fix."""


class SpecError(NassegError):
    """A bad search-space, ArchSpec or job file: names the file and the key path."""

    def __init__(self, file: str | None, key: str | None, message: str):
        self.file = file
        self.key = key
        self.message = message
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):  # pickled by Ray and by DataLoader workers: rebuilt from its three parts
        return type(self), (self.file, self.key, self.message)


def worker_error_message(message: str) -> str:
    """The message of a NassegError raised in a torch DataLoader worker process: torch re-raises it
    in the main process with the worker's whole traceback as its text; the last line is ours."""
    if "DataLoader worker process" not in message or "Traceback" not in message:
        return message
    last = [line.strip() for line in message.strip().splitlines() if line.strip()][-1]
    return re.sub(r"^(nasseg\.errors\.)?NassegError: ", "", last)
