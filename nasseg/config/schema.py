"""One configuration mechanism for every file nasseg reads: pydantic dataclasses as schemas.

A schema is a frozen dataclass declared with :func:`spec` (unknown keys forbidden, every field typed
strictly with its valid range, each default written once in the field). :func:`validate` turns a
parsed document into an instance or raises one :class:`~nasseg.errors.SpecError` line in nasseg's
format, ``file: key.path: what is wrong, expected ...``, with did-you-mean hints for unknown keys and
choices. :func:`json_schema` publishes the same schema for editors (``nasseg schema``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from functools import cache
from typing import Annotated, Any, Callable, Iterable, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Strict, TypeAdapter, ValidationError, create_model

from ..errors import SpecError

T = TypeVar("T")
SPEC_CONFIG = ConfigDict(extra="forbid")  # strictness per field: nasseg.config.types


def spec(cls: type[T]) -> type[T]:
    """Declare a schema: a frozen pydantic dataclass that forbids unknown keys. ``dataclasses.replace``
    and ``dataclasses.asdict`` work on it, and ``replace`` validates the new values."""
    return pydantic.dataclasses.dataclass(frozen=True, config=SPEC_CONFIG)(cls)


class FieldError(ValueError):
    """Raised by a schema's validators to blame a key below the object being validated."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@cache
def adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


@cache
def json_schema(schema: Any) -> dict[str, Any]:
    return adapter(schema).json_schema()


def validate(schema: type[T] | Any, data: Any, file: str | None = None, key: str | None = None) -> T:
    """``data`` checked against ``schema``; the first problem as a SpecError naming ``file`` and the
    key path (below ``key`` when the document is part of a larger one)."""
    try:
        return adapter(schema).validate_python(data)
    except ValidationError as exc:
        raise _described(exc, schema, data, file, key) from None


def _described(exc: ValidationError, schema: Any, data: Any, file: str | None, key: str | None) -> SpecError:
    """The one-line SpecError of ``exc``; should describing it fail on a document shape not foreseen
    here, pydantic's own first message, still one line naming the file and the key."""
    try:
        described = [describe_error(e, json_schema(schema), data) for e in exc.errors(include_url=False)]
        path, message = described[0]
        for deeper, text in described[1:]:  # a union's members fail at its path; the member that fits, deeper
            if deeper.startswith((path + ".", path + "[")) if path else deeper:
                path, message = deeper, text
        others = list(dict.fromkeys(_below(key, p) for p, _ in described if p != path and not path.startswith(p)))
        if others:
            message += f" (and {len(others)} more problem{'s' * (len(others) > 1)}: {', '.join(others[:4])}"
            message += ", ...)" if len(others) > 4 else ")"
        return SpecError(file, _below(key, path) or None, message)
    except Exception:  # noqa: BLE001 - the net under the description, never under validation
        first = exc.errors(include_url=False)[0]
        path = ".".join(str(part) for part in (key, *first["loc"]) if part is not None)
        return SpecError(file, path or None, f"{first['msg']}, got {describe(first.get('input'))}")


def _below(key: str | None, path: str) -> str:
    """``path`` of a document that is ``key`` in a larger one: data + [0] -> data[0], data + mean -> data.mean."""
    return ".".join(p for p in (key, path) if p) if not (path or "").startswith("[") else f"{key or ''}{path}"


# --- the keyword parameters of a builder (ops, stems, heads, models) as a schema -------------------

_STRICT = {int: Annotated[int, Strict()], float: Annotated[float, Strict(), pydantic.Field(allow_inf_nan=False)],
           bool: Annotated[bool, Strict()], str: Annotated[str, Strict()]}


@cache
def keyword_schema(func: Callable[..., Any], skip: int = 0) -> type[BaseModel]:
    """The keyword parameters of ``func`` after its first ``skip`` ones, as a schema: their names,
    types (plain int/float/bool/str made strict) and defaults; ranges come from Annotated hints."""
    hints = typing.get_type_hints(func.__init__ if isinstance(func, type) else func, include_extras=True)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(func).parameters.values())[skip:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(param.name, Any)
        fields[param.name] = (_STRICT.get(hint, hint), ... if param.default is param.empty else param.default)
    return create_model(f"{func.__name__}_keywords", __config__=ConfigDict(extra="forbid"), **fields)


def validate_keywords(func: Callable[..., Any], values: dict[str, Any], *, skip: int = 0,
                      file: str | None = None, key: str | None = None) -> dict[str, Any]:
    """``values`` checked against :func:`keyword_schema`; the given keys with their validated values."""
    checked = validate(keyword_schema(func, skip), values, file, key)
    return {name: getattr(checked, name) for name in values}


# --- turning a pydantic error into nasseg's one line ---------------------------------------------

def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    if len(str(word)) > 200:  # no name is that long; difflib would only spend time on it
        return ""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")
_MISSING = ("missing", "missing_argument", "missing_keyword_only_argument")
_FIXED = {"finite_number": "a finite number",  # what these errors expect, whatever the field
          **dict.fromkeys(("model_attributes_type", "dataclass_type", "dict_type", "model_type"), "a mapping")}
_KEY_TYPES = {"int_type": "an integer", "int_parsing": "an integer", "string_type": "a string",
              "float_type": "a number", "bool_type": "true or false"}


def describe_error(error: dict[str, Any], schema: dict[str, Any], data: Any) -> tuple[str, str]:
    """(key path, message) of one pydantic error."""
    kind, loc, ctx = error["type"], list(error["loc"]), error.get("ctx") or {}
    keys, node = _document_path(loc, data, keep_last=kind in _UNKNOWN_KEY + _MISSING)
    field_schema = _schema_at(schema, keys, data)
    value = error.get("input")
    if loc and loc[-1] == "[key]":  # a mapping's key, not its value, is wrong
        names = _schema_at(schema, keys[:-1], data).get("propertyNames", {})
        choices = names.get("enum") or []
        wanted = _KEY_TYPES.get(kind, "another key")
        message = f"unknown key {describe(keys[-1])}; expected one of {', '.join(map(str, choices))}" \
            + did_you_mean(keys[-1], choices) if choices else f"invalid key {describe(keys[-1])}; expected {wanted}"
    elif kind in _UNKNOWN_KEY:
        known = sorted(_properties(_schema_at(schema, keys[:-1], data)))
        message = f"unknown key; expected one of {', '.join(known)}" + did_you_mean(keys[-1], known)
    elif kind in _MISSING:
        message = f"missing; expected {expected(field_schema)}"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        message = f"must be {_BOUNDS[kind]} {bound}, got {describe(value)}" + _reason(field_schema)
    elif kind == "union_tag_not_found":
        union = _schema_at(schema, keys, data, branch=False)
        tags = list((union.get("discriminator") or {}).get("mapping") or {})
        keys.append(str(ctx.get("discriminator", "")).strip("'"))
        message = f"missing; expected one of {', '.join(tags)}" if tags else f"missing; {error['msg']}"
    elif kind in _FIXED:
        message = f"expected {_FIXED[kind]}, got {describe(value)}"
    elif kind == "union_tag_invalid":
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        keys.append(str(ctx.get("discriminator", "")).strip("'"))
        tag = value.get(keys[-1], ctx.get("tag")) if isinstance(value, dict) else ctx.get("tag")
        message = f"expected one of {', '.join(tags)}, got {describe(tag)}" + did_you_mean(tag, tags)
    elif kind == "literal_error" and ("enum" in field_schema or "const" in field_schema):
        choices = field_schema.get("enum") or [field_schema.get("const")]
        message = f"expected one of {', '.join(map(str, choices))}, got {describe(value)}" + did_you_mean(value, choices)
    elif kind == "too_short" and isinstance(value, (dict, list)) and not value:
        message = f"empty; expected {expected(field_schema)}"
    elif kind == "string_too_short":
        message = f"expected a string of at least {ctx.get('min_length')} character(s), got {describe(value)}"
    elif kind == "too_long":
        message = f"{ctx.get('actual_length')} entries; expected at most {ctx.get('max_length')}"
    elif kind.startswith("nasseg_"):  # custom errors of our own validators carry their message
        message = error["msg"]
    elif kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if isinstance(cause, FieldError):
            keys += cause.key.split(".")
        message = str(cause) if cause is not None else error["msg"]
    else:
        message = f"expected {expected(field_schema)}, got {describe(value)}"
    return _join(keys), message


def _reason(node: dict[str, Any]) -> str:
    """' (why)' when the field's description ends with its reason in parentheses, else ''."""
    text = node.get("description", "")
    return f" ({text.rsplit('(', 1)[1]}" if text.startswith("expected ") and text.endswith(")") and "(" in text else ""


def _join(keys: list[str | int]) -> str:
    text = ""
    for k in keys:
        text += f"[{k}]" if isinstance(k, int) else (f".{k}" if text else str(k))
    return text


def _document_path(loc: list[Any], data: Any, keep_last: bool) -> tuple[list[str | int], Any]:
    """The error location as keys of the user's document: pydantic also names union members and
    tags in ``loc``, which are not keys the user wrote."""
    keys: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            keys.append(str(part))  # a mapping key, even an integer one, is written .key
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            keys.append(part)
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            keys.append(part)
    return keys, node


# --- reading the JSON schema along a document path -----------------------------------------------

def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].split("/")[-1]]
    return node


def _branches(schema: dict[str, Any], node: dict[str, Any], value: Any) -> dict[str, Any]:
    """Pick the member of a union that describes ``value``: by discriminator tag, else the first
    non-null member of its JSON type (of mappings, the first that has every key of ``value``)."""
    node = _resolve(schema, node)
    members = node.get("oneOf") or node.get("anyOf")
    if not members:
        return node
    mapping = (node.get("discriminator") or {}).get("mapping")
    prop = (node.get("discriminator") or {}).get("propertyName")
    if mapping and isinstance(value, dict) and isinstance(value.get(prop), str) and value[prop] in mapping:
        return _resolve(schema, {"$ref": mapping[value[prop]]})
    real = [_resolve(schema, m) for m in members if _resolve(schema, m).get("type") != "null"]
    kind = _json_type(value)
    matching = [m for m in real if m.get("type") == kind or (kind == "number" and m.get("type") == "integer")]
    if isinstance(value, dict):
        matching = [m for m in matching if set(map(str, value)) <= set(_properties(m))] or matching
    return matching[0] if matching else real[0] if len(real) == 1 else node


def _json_type(value: Any) -> str | None:
    kinds = ((bool, "boolean"), ((int, float), "number"), (str, "string"), (dict, "object"), ((list, tuple), "array"))
    return next((name for types, name in kinds if isinstance(value, types)), None)


def _schema_at(schema: dict[str, Any], keys: list[Any], data: Any, branch: bool = True) -> dict[str, Any]:
    """The JSON-schema node of the document at ``keys``; with ``branch=False`` a union there is
    returned as the union (its members and discriminator), not the member that fits the value."""
    node, value = _branches(schema, schema, data), data
    for i, key in enumerate(keys):
        if isinstance(key, int):
            items = node.get("prefixItems")
            node = items[key] if items and key < len(items) else node.get("items", {})
        else:
            node = _properties(node).get(key) or node.get("additionalProperties") or {}
            node = {} if node is True else node
        value = value.get(key) if isinstance(value, dict) else value[key] if isinstance(value, list) and \
            isinstance(key, int) and key < len(value) else None
        node = _branches(schema, node, value) if branch or i < len(keys) - 1 else _resolve(schema, node)
    return node


def _properties(node: dict[str, Any]) -> dict[str, Any]:
    return node.get("properties", {})


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "null"}


def expected(node: dict[str, Any]) -> str:
    """A short phrase for what a JSON-schema node accepts: 'an integer >= 1', 'one of a, b', ..."""
    if "const" in node:
        return repr(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(map(str, node["enum"]))
    if node.get("description", "").startswith("expected "):
        return node["description"].removeprefix("expected ")
    members = node.get("anyOf") or node.get("oneOf")
    if members:
        words = [expected(m) for m in members if m.get("type") != "null"]
        text = " or ".join(dict.fromkeys(words)) or "null"
        return text + (" (or null)" if any(m.get("type") == "null" for m in members) else "")
    kind = node.get("type")
    text = _TYPE_WORDS.get(kind, "a value")
    bounds = [f"{op} {node[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                               ("maximum", "<="), ("exclusiveMaximum", "<")) if k in node]
    if kind == "object" and node.get("minProperties"):
        return "a non-empty mapping"
    if kind == "array":
        count = node.get("minItems") if node.get("minItems") == node.get("maxItems") else None
        inner = node.get("prefixItems", [node.get("items", {})])[0] if node.get("prefixItems") or node.get("items") else {}
        item = expected(inner) if inner else "values"
        text = f"a list of {count} {_plural(item)}" if count else f"a list of {_plural(item)}"
        if node.get("minItems") and not count:
            text += f" (at least {node['minItems']})"
        return text
    return text + (" " + " and ".join(bounds) if bounds else "")


def _plural(phrase: str) -> str:
    return next((many + phrase[len(one):] for one, many in (("an integer", "integers"), ("a number", "numbers"),
                 ("a string", "strings"), ("a mapping", "mappings")) if phrase.startswith(one)), phrase)


def to_plain(value: Any) -> Any:
    """A schema instance (or anything holding them) as plain YAML/JSON data: dicts, lists, scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


