"""One registration mechanism for everything nasseg looks up by name: ops, stems, heads, models and
datasets. A registry is a read-only mapping name -> entry; registering a name twice is an error, an
unknown name is a one-line error with a did-you-mean, and ``nasseg info --list KIND`` lists it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .config.schema import did_you_mean, validate_keywords
from .errors import NassegError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one ``kind`` by name, in registration order. ``builtins`` are modules whose import
    registers the built-in entries; they are imported on the first lookup (they import the registry)."""

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._docs: dict[str, str] = {}
        self._builtins = builtins
        self._loaded = not builtins

    def register(self, name: str, entry: T, doc: str | None = None) -> T:
        if name in self._entries:
            raise NassegError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[name] = entry
        self._docs[name] = doc if doc is not None else _first_line(entry)
        return entry

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a plugin's or a test's own entry); its entry."""
        self._docs.pop(name, None)
        return self._entries.pop(name)

    def decorator(self, name: str, make: Callable[[Any], T] | None = None) -> Callable[[Any], Any]:
        """``@registry.decorator(name)`` registers the decorated object (or ``make(obj)``) and
        returns the object unchanged."""
        def add(obj: Any) -> Any:
            self.register(name, make(obj) if make else obj, _first_line(obj))
            return obj
        return add

    def get_entry(self, name: str) -> T:
        """The entry of ``name``, or a NassegError listing the registered names (did you mean ...)."""
        self._load()
        if name not in self._entries:
            raise NassegError(f"unknown {self.kind} {name!r}; registered: {', '.join(self._entries)}"
                              + did_you_mean(name, self._entries))
        return self._entries[name]

    def describe_entry(self, name: str) -> str:
        self._load()
        return self._docs[name]

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) of every entry."""
        self._load()
        return [(name, self._docs[name]) for name in self._entries]

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before importing: the modules register into this registry
            for module in self._builtins:
                importlib.import_module(module)

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        try:
            return name in self._entries
        except TypeError:  # an unhashable name (a list or mapping where a name belongs) is no entry
            return False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


class KeywordEntry:
    """An entry whose ``build`` takes ``skip`` positional arguments, then the keywords a file may set."""

    skip = 0

    def params(self) -> list[str]:
        return list(inspect.signature(self.build).parameters)[self.skip:]

    def check_params(self, params: dict[str, Any], file: str | None = None, key: str | None = None) -> dict[str, Any]:
        """``params`` validated against the keyword parameters (names, types, ranges)."""
        return validate_keywords(self.build, params, skip=self.skip, file=file, key=key)


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "doc", None) if isinstance(getattr(obj, "doc", None), str) else inspect.getdoc(obj)
    return (doc or "").strip().split("\n")[0]
