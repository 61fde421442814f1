"""``--set key.path=value`` (the one override mechanism of every job kind) and paths relative to the
file that names them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError
from .schema import describe
from .yamlfile import load_yaml, parse_yaml


def set_keys(data: dict[str, Any], values: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """A copy of ``data`` with ``{"weights.lr": 0.01}`` set at data["weights"]["lr"] (mappings on the
    way are created; numpy scalars, e.g. from Optuna, become Python numbers)."""
    data = copy.deepcopy(data)
    for key, value in values.items():
        parts = key.strip().split(".")
        if not all(parts):
            raise SpecError(source, None, f"expected a dotted key such as weights.lr, got {describe(key)}")
        target = data
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SpecError(source, key, f"{part} is not a mapping in the job")
        target[parts[-1]] = value.item() if hasattr(value, "item") else value
    return data


def apply_overrides(data: Any, overrides: list[str], file: str | None = None) -> Any:
    """``["weights.lr=0.01", "data.crop=[64,64]"]`` (``--set``) applied to a parsed document; values are YAML."""
    if not overrides:
        return data
    if not isinstance(data, dict):
        raise SpecError(file, None, f"expected a mapping of job keys, got {type(data).__name__}")
    values = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(None, "--set", f"expected key.path=value, got {describe(item)}")
        values[key.strip()] = parse_yaml(text, f"--set {key.strip()}")
    return set_keys(data, values, "--set")


def load_document(path: str | Path, overrides: list[str] | None = None) -> Any:
    """A job file's YAML with ``--set`` overrides applied (any kind of job)."""
    return apply_overrides(load_yaml(path), overrides or [], str(path))


def relative_to_file(value: str, file: str | None) -> str:
    """A path written in a job file: absolute as it is; relative to the job file's folder when it
    exists there, else relative to the working directory (as typed on the command line)."""
    path = Path(value).expanduser()
    if file and not path.is_absolute():
        beside = Path(file).parent / path
        if beside.exists():
            return str(beside)
    return str(path)
