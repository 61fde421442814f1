"""Typed reading of YAML mappings with errors that name the file, the key path and what was expected.

Every spec file of nasseg (search spaces, ArchSpecs, job files) is read through :class:`Section`
so that all of them fail the same way: one line, ``file: key.path: what is wrong``.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import yaml

from .config.schema import describe, did_you_mean
from .config.yamlfile import load_yaml
from .errors import SpecError

_REQUIRED = object()

# YAML 1.1 (PyYAML) reads 1e-6 / 3e-4 (no dot) as strings; float fields accept them anyway.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a mapping"}


def type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def is_instance(value: Any, expected: type | tuple[type, ...]) -> bool:
    """isinstance where bool is not an int and an int is a valid float."""
    types = expected if isinstance(expected, tuple) else (expected,)
    for t in types:
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t not in (int, float) and isinstance(value, t):
            return True
    return False


class Section:
    """A mapping being read: remembers which keys were used so unknown keys can be reported."""

    def __init__(self, data: Any, file: str | None, path: str = ""):
        if not isinstance(data, dict):
            raise SpecError(file, path or None, f"expected a mapping, got {describe(data)}")
        self.data = data
        self.file = file
        self.path = path
        self._used: set[str] = set()

    def key(self, name: str | int) -> str:
        if isinstance(name, int):
            return f"{self.path}[{name}]"
        return f"{self.path}.{name}" if self.path else str(name)

    def error(self, key: str | int | None, message: str) -> SpecError:
        return SpecError(self.file, self.key(key) if key is not None else (self.path or None), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, expected: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        """The value under ``name``, checked against ``expected``; ``default`` when absent."""
        self._used.add(name)
        if name not in self.data or self.data[name] is None and default is not _REQUIRED:
            if default is _REQUIRED:
                raise self.error(name, f"missing; expected {type_name(expected)}")
            return default
        value = self.data[name]
        floats = expected is float or (isinstance(expected, tuple) and float in expected)
        if floats and isinstance(value, str) and _EXPONENT_FLOAT.match(value):
            value = float(value)
        if not is_instance(value, expected):
            raise self.error(name, f"expected {type_name(expected)}, got {describe(value)}")
        return float(value) if expected is float else value

    def get_int(self, name: str, default: Any = _REQUIRED, minimum: int | None = None) -> int:
        value = self.get(name, int, default)
        if minimum is not None and value is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return value

    def get_choice(self, name: str, choices: Iterable[str], default: Any = _REQUIRED) -> str:
        choices = list(choices)
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}, got {describe(value)}"
                             + did_you_mean(value, choices))
        return value

    def section(self, name: str, default: Any = _REQUIRED) -> "Section":
        value = self.get(name, dict, default)
        return Section(value, self.file, self.key(name))

    def finish(self) -> None:
        """Fail on the first key that was never read (a typo or an unsupported option)."""
        for name in self.data:
            if name not in self._used:
                known = sorted(self._used)
                raise self.error(str(name), f"unknown key; expected one of {', '.join(known)}"
                                 + did_you_mean(str(name), known))


def resolve_builtin(name_or_path: str | Path, folder: Path, kind: str) -> Path:
    """A YAML path as given, or ``folder/<name>.yaml`` for a bare built-in name such as ``darts``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    builtin = folder / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    raise SpecError(str(name_or_path), None, f"no such file or built-in {kind}; built-in: "
                    + ", ".join(names) + did_you_mean(str(name_or_path), names))


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def read_pair(sec: Section, key: str, default: Any, kind: type = int) -> Any:
    """Two numbers: [H, W] sizes (ints) or e.g. Adam's betas (floats)."""
    value = sec.get(key, list, None)
    if value is None:
        return default
    if len(value) != 2 or not all(is_instance(v, kind) for v in value):
        shape = "[H, W] (two integers)" if kind is int else "two numbers [a, b]"
        raise sec.error(key, f"expected {shape}, got {describe(value)}")
    return tuple(kind(v) for v in value)


def read_fields(sec: Section, defaults: Any) -> dict[str, Any]:
    """Read every field of a dataclass instance ``defaults`` from ``sec``, typed like the default."""
    values = {}
    for name, default in asdict(defaults).items():
        if isinstance(default, tuple):
            values[name] = read_pair(sec, name, default, type(default[0]))
        elif isinstance(default, float):
            values[name] = sec.get(name, float, default)
        elif isinstance(default, bool):
            values[name] = sec.get(name, bool, default)
        elif isinstance(default, int):
            values[name] = sec.get_int(name, default, minimum=0)
        else:
            values[name] = sec.get(name, object, default)
    sec.finish()
    return values


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["weights.lr=0.01", "data.crop=[64,64]"]`` applied to a parsed job (values are YAML)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise SpecError(None, "--set", f"expected key.path=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise SpecError(None, f"--set {key}", f"value {text!r} is not valid YAML") from None
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SpecError(None, f"--set {key}", f"{part} is not a mapping")
        target[parts[-1]] = value
    return data


def load_job_data(path: str | Path, overrides: list[str] | None = None) -> Any:
    """A job file's YAML with ``--set`` overrides applied (any kind of job)."""
    data = load_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise SpecError(str(path), None, "expected a mapping")
        data = apply_overrides(data, overrides)
    return data
