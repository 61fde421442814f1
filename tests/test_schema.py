"""The published JSON Schemas (`nasseg schema`) describe the files nasseg reads: every shipped job,
space and architecture validates, and what the schema refuses the reader refuses too."""

import json
from pathlib import Path

import jsonschema
import pytest

from nasseg.config import load_yaml
from nasseg.errors import SpecError
from nasseg.search.config import parse_job
from nasseg.shell.cli.main import main
from nasseg.shell.cli.schema import schema_for
from nasseg.space import BUILTIN_DIR

REPO = Path(__file__).resolve().parents[1]


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = schema_for(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind, files", [
    ("search", sorted(REPO.glob("jobs/*.yaml"))),
    ("space", sorted(BUILTIN_DIR.glob("*.yaml"))),
    ("arch", sorted((REPO / "nasseg" / "archs").glob("*.yaml")) + sorted(REPO.glob("jobs/archs/*.yaml"))),
])
def test_every_shipped_file_validates(kind, files):
    assert len(files) >= 2
    check = validator(kind)
    for path in files:
        errors = [e.message for e in check.iter_errors(load_yaml(path))]
        assert errors == [], path


@pytest.mark.parametrize("change, key", [
    ({"weights": {"lr": -0.5}}, "weights.lr"),
    ({"data": {"size": [-32, 32]}}, "data.size[0]"),
    ({"weigths": {}}, "weigths"),
    ({"early_stop": {"rule": "papr"}}, "early_stop.rule"),
    ({"name": "../escape"}, "name"),
    ({"hessian": {"tol": 2}}, "hessian.tol"),
])
def test_the_schema_and_the_reader_refuse_the_same_mistakes(change, key):
    job = {**load_yaml(REPO / "jobs" / "demo.yaml"), **change}
    assert not validator("search").is_valid(job)
    with pytest.raises(SpecError) as info:
        parse_job(job, "job.yaml")
    assert str(info.value).startswith(f"job.yaml: {key}:")


def test_space_schema_spells_out_op_parameters():
    schema = schema_for("space")
    ops = schema["properties"]["ops"]["items"]["anyOf"]
    noise = next(entry for entry in ops if entry.get("title") == "noise")
    assert noise["properties"]["std"]["minimum"] == 0 and noise["additionalProperties"] is False
    space = load_yaml(BUILTIN_DIR / "robustdarts_s4.yaml")
    check = validator("space")
    assert check.is_valid(space)
    space["network"]["stem"]["channels"] = 0
    assert not check.is_valid(space)


def test_schema_command_writes_json(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["schema", "train", "-o", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert schema["title"] == "nasseg training job" and "model" in schema["required"]
    assert main(["schema", "job"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["title"] == "nasseg job file"
