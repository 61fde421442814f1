"""The token of a Ray cluster with token authentication, found where Ray itself looks.

Ray reads it from RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token. ``ray start`` turns token authentication on by itself when it finds one, but a
driver attaching to a running cluster (``ray.init(address=...)``) does so only with
RAY_AUTH_MODE=token: without it, ``nasseg search --address`` spent ~24 s on InvalidAuthToken retries
and failed. :func:`use_cluster_token` does for the driver what ``ray start`` does. The token's value
is never printed or logged; messages name only where it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nasseg.errors import NassegError

AUTH_MODE = "RAY_AUTH_MODE"


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # for messages; the value itself is never shown

    def __repr__(self) -> str:  # a traceback or a debugger shows the source, never the value
        return f"Token(source={self.source!r})"


def find_token() -> Token | None:
    """The token Ray would use; none when RAY_AUTH_MODE=disabled."""
    if os.environ.get(AUTH_MODE, "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return Token(os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN")
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named:
        try:
            value = Path(named).expanduser().read_text().strip()
        except OSError:
            raise NassegError(f"RAY_AUTH_TOKEN_PATH names {named}, which cannot be read") from None
        if value:
            return Token(value, f"RAY_AUTH_TOKEN_PATH ({named})")
    try:
        value = (Path.home() / ".ray" / "auth_token").read_text().strip()
    except OSError:
        return None
    return Token(value, "~/.ray/auth_token") if value else None


def missing_token(where: str) -> str:
    return (f"{where} requires token authentication and no token was found here; set RAY_AUTH_TOKEN, "
            "or put the token in ~/.ray/auth_token (or a file named by RAY_AUTH_TOKEN_PATH)")


def rejected_token(where: str, token: Token | None) -> str:
    return (f"{where} rejected the authentication token from {token.source if token else 'nowhere'}; use the "
            "cluster's token (`ray get-auth-token` on the head node prints it)")


def use_cluster_token() -> Token | None:
    """Before ``ray.init(address=...)``: with a token at hand and RAY_AUTH_MODE unset, set
    RAY_AUTH_MODE=token (as ``ray start`` does), so the driver authenticates. A cluster without
    authentication ignores the token; an explicit RAY_AUTH_MODE is left as it is."""
    token = find_token()
    if token is not None and AUTH_MODE not in os.environ:
        os.environ[AUTH_MODE] = "token"
        # Ray reads RAY_AUTH_MODE into its config when it is imported: re-read it, as Ray's own
        # switch to token mode (used by ``ray start``) does
        try:
            from ray._raylet import Config
        except ImportError:  # another Ray layout: the variable still reaches the processes started later
            return token
        Config.initialize("")
    return token
