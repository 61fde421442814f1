"""Reading the YAML files nasseg is given (search spaces, job files, architectures): safely, strictly,
and failing with one line that names the file.

Strict where YAML is lenient: a key written twice in one mapping is an error (PyYAML keeps the last
one without a word), the file must be UTF-8 text of sane size, and ``1e-4`` is a number as in YAML 1.2
(YAML 1.1 reads exponents without a dot as strings). Aliases are allowed, but a document whose
expansion passes :data:`MAX_NODES` values (an "alias bomb") is refused before anything walks it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from .schema import describe, did_you_mean

MAX_BYTES = 4 * 2**20  # spec and job files are a few KB; anything this large is not one
MAX_NODES = 1_000_000  # values in the document with every alias expanded


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads YAML 1.2 exponent floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {describe(key)} (first at line {first.start_mark.line + 1}); "
                    "each key may appear once per mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str, file: str | None = None) -> Any:
    """A YAML document from text; malformed or hostile documents become one-line SpecErrors."""
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise SpecError(file, None, f"{where}invalid YAML ({problem})") from None
    except RecursionError:
        raise SpecError(file, None, "invalid YAML (nested too deeply)") from None
    if expanded_size(data) > MAX_NODES:
        raise SpecError(file, None, f"its aliases expand to more than {MAX_NODES:,} values; "
                        "expected a spec file, not a generated document")
    return data


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file: one-line SpecErrors for a missing, unreadable, oversized,
    non-UTF-8 or malformed file."""
    path = Path(path)
    try:
        if path.is_dir():
            raise SpecError(str(path), None, "is a directory; expected a YAML file")
        if path.exists() and not path.is_file():  # reading a FIFO or a device would block or never end
            raise SpecError(str(path), None, "not a regular file (a FIFO, socket or device); expected a YAML file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecError(str(path), None, f"{size:,} bytes; expected a YAML file of at most {MAX_BYTES:,}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(str(path), None, "file not found") from None
    except OSError as exc:
        raise SpecError(str(path), None, f"cannot read the file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "expected a YAML file") from None
    return parse_yaml(text, str(path))


def expanded_size(data: Any) -> int:
    """How many values ``data`` holds with shared (aliased) sub-documents counted every time they
    occur; linear in the number of distinct containers."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int = 0) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        known = sizes.get(id(value))
        if known is not None:
            return known
        if depth > 500:
            return MAX_NODES + 1
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        sizes[id(value)] = total = 1 + sum(size(item, depth + 1) for item in items)
        return total

    return size(data)


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


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
