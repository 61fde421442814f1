"""NAS study jobs (``kind: study``): does the search beat what a user gets without it?

The job file, every key and the protocol: docs/study.md (``jobs/study_camvid.yaml`` is an example).
With ``ablation`` the searches run every epoch with early stopping off, and the job's stop rule is
replayed on the recorded eigenvalues: the rule reads nothing but them, so it picks the epoch a
stopping search would have returned, and the same run also gives the architecture of the last
epoch. ``--set search.KEY=VALUE`` changes the search job (a search given as a path is read into
the study first), ``--set recipe.iters=2000`` the recipe, and so on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model

from nasseg.config import FieldError, apply_overrides, load_yaml, spec, validate
from nasseg.config.types import Bool, NonNegativeInt, OpenUnit, RunName, Seed, Seeds, Size, Str
from nasseg.errors import NassegError, SpecError
from nasseg.search.config import ResourcesConfig, SearchConfig, parse_job
from nasseg.search.stop_rules import DartsADA, NeverStop, make_rule
from nasseg.train.config import TrainConfig, parse_train_job

from .hpo import _base_job

SEARCH_NAME = "search"  # the searches' experiment folder inside the study: OUT/<study>/search/seed<N>
GROUPS = ("searched_stop", "searched_last", "random")  # candidate groups besides the baselines
# keys of a training job that the study sets per candidate, never in the shared recipe
PER_CANDIDATE = ("model", "model_args", "name", "seed", "loss_weights", "kind", "file")

# The recipe: a training job's keys except PER_CANDIDATE, with TrainConfig's own types, ranges and
# defaults (written once, in nasseg.train.config).
Recipe = create_model("Recipe", __config__=ConfigDict(extra="forbid"),
                      **{name: (info.annotation, info) for name, info in TrainConfig.__pydantic_fields__.items()
                         if name not in PER_CANDIDATE})


@spec
class RandomArchs:
    count: Annotated[int, Field(ge=0, le=10_000, strict=True)] = 5  # M; 0 = no random group
    seed: Seed = 0  # architecture i is drawn with the generator seeded by [seed, i]


@spec
class Baseline:
    model: Str  # a registered model name (nasseg info --list models)
    model_args: dict[Str, Any] = dataclasses.field(default_factory=dict)
    name: RunName | None = None  # the group's name (default: the model's)

    @property
    def group(self) -> str:
        return self.name or self.model


@spec
class BootstrapConfig:
    samples: Annotated[int, Field(ge=100, le=1_000_000, strict=True)] = 10_000
    confidence: OpenUnit = 0.95
    seed: Seed = 0


@spec
class StudyJob:
    """The document of a ``kind: study`` job (see the module docstring)."""

    kind: Literal["study"]
    search: Str | dict[Str, Any]  # the search job: a path (relative to this file) or a mapping
    recipe: Recipe  # type: ignore[valid-type]
    name: RunName = "study"  # default: the job file's name
    ablation: Bool = True
    random: RandomArchs = RandomArchs()
    arch_args: dict[Str, Any] = dataclasses.field(default_factory=dict)
    baselines: tuple[Str | Baseline, ...] = ()
    retrain_seeds: Seeds = (0, 1)
    resources: ResourcesConfig = ResourcesConfig()
    max_failures: NonNegativeInt = 2  # restarts of a retraining trial whose worker died
    cost_input: Size | None = None
    bootstrap: BootstrapConfig = BootstrapConfig()

    def __post_init__(self) -> None:
        groups = [b.group if isinstance(b, Baseline) else b for b in self.baselines]
        for i, group in enumerate(groups):
            if group in GROUPS or group in groups[:i]:
                raise FieldError(f"baselines[{i}]", f"group name {group!r} is taken (by the study's "
                                 f"{', '.join(GROUPS)} or an earlier baseline); give it its own `name`")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    job: StudyJob
    search: SearchConfig  # the search as run: name 'search', with ablation early stopping off
    rule: dict[str, Any]  # the job's early_stop section: the rule whose answer the study retrains
    recipe: dict[str, Any]  # the shared training keys, paths absolute
    baselines: tuple[Baseline, ...]
    file: str | None

    @property
    def retrain_seeds(self) -> tuple[int, ...]:
        return tuple(self.job.retrain_seeds)


def load_study_job(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """A study file with ``--set`` applied; a search given as a path is read in first, so that
    ``--set search.epochs=3`` reaches it (its paths stay relative to its own file)."""
    data, search_file = load_yaml(path), None
    if isinstance(data, dict) and isinstance(data.get("search"), str):
        search, search_file = _base_job(data["search"], str(path))
        data = {**data, "search": search}
    return parse_study_job(apply_overrides(data, overrides or [], str(path)), str(path), search_file)


def parse_study_job(data: Any, file: str | None = None, search_file: str | None = None) -> StudyConfig:
    if isinstance(data, dict):
        data = {"name": Path(file).stem if file else "study", **data}
        recipe = data.get("recipe")
        for key in PER_CANDIDATE if isinstance(recipe, dict) else ():
            if key in recipe:
                raise SpecError(file, f"recipe.{key}", "set by the study per candidate (searched, random and "
                                "baseline models, retraining seeds); the recipe holds what every candidate shares")
    job = validate(StudyJob, data, file)
    search, rule = _search(job, file, search_file)
    baselines = tuple(b if isinstance(b, Baseline) else Baseline(b) for b in job.baselines)
    recipe = _recipe(data["recipe"], baselines, file)
    _check_arch_args(search, job.arch_args, recipe, file)
    return StudyConfig(job.name, job, search, rule, recipe, baselines, file)


def _search(job: StudyJob, file: str | None, search_file: str | None) -> tuple[SearchConfig, dict[str, Any]]:
    """The search job as the study runs it, and its stop rule's section."""
    data, base = _base_job(job.search, search_file or file)  # search_file: a path read in by load_study_job
    inline = base == file
    try:
        search = parse_job({**data, "name": SEARCH_NAME}, base)
    except SpecError as exc:  # an inline search names its keys below `search`
        key = ".".join(k for k in ("search", exc.key) if k) if inline else "search"
        raise SpecError(file, key, exc.message if inline else str(exc)) from None
    rule = dataclasses.asdict(search.early_stop)
    if job.ablation:
        if isinstance(make_rule(search.early_stop), (NeverStop, DartsADA)):
            raise SpecError(file, "ablation", "the stop-rule vs last-epoch ablation replays the search's stop rule on "
                            "a search run to its last epoch; it needs early_stop.rule paper or released without "
                            "DARTS-ADA (whose rollbacks change the search itself); set ablation: false otherwise")
        search = search.replace(early_stop={"rule": "none"})
    return search.replace(file=None if inline else search.file), rule


def train_job(recipe: dict[str, Any], model: str, model_args: dict[str, Any], name: str, seed: int,
              file: str | None = None) -> TrainConfig:
    """The training job of one candidate and retraining seed: the recipe plus the model."""
    return parse_train_job({**recipe, "model": model, "model_args": dict(model_args), "name": name, "seed": seed},
                           file)


def _recipe(raw: dict[str, Any], baselines: tuple[Baseline, ...], file: str | None) -> dict[str, Any]:
    """The recipe with its paths made absolute (trials run in other folders); every baseline's
    model and keywords checked against it now, not after the searches."""
    probe = baselines[0] if baselines else Baseline("deeplabv3plus_mobilenetv2")
    config = _candidate_job(raw, probe, "baselines[0]", file, file)
    recipe = {k: v for k, v in config.to_dict().items() if k not in PER_CANDIDATE}
    for section, key in ((recipe["data"], "root"), (recipe, "pretrained")):
        if section.get(key):
            section[key] = str(Path(section[key]).expanduser().resolve())
    for i, baseline in enumerate(baselines[1:], start=1):
        _candidate_job(recipe, baseline, f"baselines[{i}]", None, file)
    return recipe


def _candidate_job(recipe: dict[str, Any], baseline: Baseline, key: str, recipe_file: str | None,
                   study_file: str | None) -> TrainConfig:
    """A baseline's training job; a problem with its model is blamed on ``key``, any other on the recipe."""
    try:
        return train_job(recipe, baseline.model, baseline.model_args, "probe", 0, recipe_file)
    except SpecError as exc:
        about_model = (exc.key or "model").split(".")[0] in ("model", "model_args")
        where = f"{key}.{exc.key or 'model'}" if about_model else f"recipe.{exc.key}"
        raise SpecError(study_file, where, exc.message) from None
    except NassegError as exc:  # an unknown model name
        raise SpecError(study_file, f"{key}.model", str(exc)) from None


def _check_arch_args(search: SearchConfig, arch_args: dict[str, Any], recipe: dict[str, Any],
                     file: str | None) -> None:
    """The retrain-network keywords fit the space's architectures (checked on one drawn from it)."""
    from nasseg import space as spaces
    from nasseg.arch import sample_architecture
    from nasseg.models import check_args

    arch = sample_architecture(spaces.load(search.space), 0)
    try:
        check_args(arch, arch_args)
    except SpecError as exc:
        key = (exc.key or "").removeprefix("model_args").lstrip(".")
        raise SpecError(file, f"arch_args.{key}" if key else "arch_args", exc.message) from None
