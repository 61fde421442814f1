"""Reading nasseg's YAML files into validated, typed objects: one loader (``load_yaml``), one schema
mechanism (``spec``, ``validate``, ``json_schema``), one ``--set`` (``apply_overrides``), one rule for
paths written in a file (``relative_to_file``)."""

from .overrides import apply_overrides, load_document, relative_to_file, set_keys
from .schema import (FieldError, describe, did_you_mean, json_schema, keyword_schema, spec, to_plain, validate,
                     validate_keywords)
from .yamlfile import dump_yaml, load_yaml, parse_yaml, resolve_builtin

__all__ = ["FieldError", "apply_overrides", "describe", "did_you_mean", "dump_yaml", "json_schema", "keyword_schema", "load_document",
           "load_yaml", "parse_yaml", "relative_to_file", "resolve_builtin", "set_keys", "spec", "to_plain", "validate", "validate_keywords"]
