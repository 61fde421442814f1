"""``nasseg schema KIND``: the JSON Schema of a file kind, for editors that complete and check YAML as
it is typed (docs/schemas.md) and for scripts that generate job files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nasseg.arch.spec import ArchDoc
from nasseg.config import json_schema, keyword_schema
from nasseg.io import atomic_write_text
from nasseg.registry import Registry
from nasseg.search.config import SearchConfig
from nasseg.space import OPS
from nasseg.space.blocks import HEADS, STEMS
from nasseg.space.spec import SpaceDoc
from nasseg.train.config import TrainConfig

DRAFT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("job", "search", "train", "hpo", "study", "space", "arch")


def job_schema() -> dict[str, Any]:
    """Any job file nasseg reads from jobs/: a search job (no kind, or kind: search), an HPO study
    (kind: hpo), a NAS study (kind: study) or a training job (a model key)."""
    from ..runner.hpo import HpoJob
    from ..runner.study import StudyJob
    return _document(SearchConfig | HpoJob | StudyJob | TrainConfig, "nasseg job file",
                     "A search job, an HPO job (kind: hpo), a NAS study (kind: study) or a training job (a model key).")


def space_schema() -> dict[str, Any]:
    """A search space, with the registered ops, stems and heads and their parameters spelled out."""
    schema = _document(SpaceDoc, "nasseg search space", "Ops, a cell DAG and a chain or lattice network.")
    op_entries = _registry_entries(OPS, "op", skip=3, extra={"name": {"type": "string"}}, required=False)
    schema["properties"]["ops"]["items"] = {"anyOf": [{"enum": list(OPS)}, *op_entries]}
    for network in ("ChainDoc", "LatticeDoc"):
        props = schema["$defs"][network]["properties"]
        props["stem"] = {"oneOf": _registry_entries(STEMS, "type", skip=0)}
        props["head"] = {"oneOf": _registry_entries(HEADS, "type", skip=3)}
    return schema


def _registry_entries(registry: Registry, tag: str, skip: int, extra: dict[str, Any] | None = None,
                      required: bool = True) -> list[dict[str, Any]]:
    """One object schema per registered entry: the tag naming it plus its builder's keyword parameters."""
    entries = []
    for name, entry in registry.items():
        builder = getattr(entry, "builder", None) or entry.build
        params = keyword_schema(builder, skip).model_json_schema()
        properties = {tag: {"const": name}, **(extra or {}), **params.get("properties", {})}
        entries.append({"type": "object", "title": name, "description": registry.describe_entry(name),
                        "properties": properties, "required": [tag] if required else [],
                        "additionalProperties": False, **({"$defs": params["$defs"]} if "$defs" in params else {})})
    return entries


def _document(schema: Any, title: str, description: str) -> dict[str, Any]:
    return {"$schema": DRAFT, **json_schema(schema), "title": title, "description": description}


def schema_for(kind: str) -> dict[str, Any]:
    if kind in ("job", "search"):
        return job_schema()
    if kind == "train":
        return _document(TrainConfig, "nasseg training job", "What `nasseg train JOB.yaml` reads.")
    if kind == "hpo":
        from ..runner.hpo import HpoJob
        return _document(HpoJob, "nasseg HPO job", "kind: hpo: an Optuna study over a search job.")
    if kind == "study":
        from ..runner.study import StudyJob
        return _document(StudyJob, "nasseg NAS study", "kind: study: searches, random architectures and baselines "
                         "retrained with one recipe and compared (docs/study.md).")
    if kind == "space":
        return space_schema()
    return _document(ArchDoc, "nasseg architecture (ArchSpec)", "What `nasseg decode` writes and `nasseg train` reads.")


def add_schema_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "schema", help="print the JSON Schema of job, space or architecture files (for editors and scripts)",
        description="Print the JSON Schema (draft 2020-12) of a file kind: job (= search: every job file in "
                    "jobs/: search jobs, kind: hpo and kind: study jobs and training jobs), train, hpo, study, "
                    "space (with the registered ops, stems and heads) or arch. Point an editor's YAML support at "
                    "it to get completion and checking while typing (docs/schemas.md).",
        epilog="Example: nasseg schema job -o .schemas/job.json; nasseg schema space > space.schema.json")
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    parser.add_argument("-o", "--output", default=None, metavar="FILE.json", help="write here instead of stdout")
    parser.set_defaults(run=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(schema_for(args.kind), indent=2) + "\n"
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
