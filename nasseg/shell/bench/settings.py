"""What one ``nasseg bench`` run measures (:class:`Settings`) and what it reports (:class:`Row`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from nasseg.errors import NassegError

from .nets import NetConfig

SUITES = ("darts", "autodeeplab", "order", "checkpoint", "hessian", "ray", "peers", "plan")
# ray starts a local Ray, peers runs the original codes for many minutes and plan measures six first steps
# (memory planner against measured peaks): only when asked for
DEFAULT_SUITES = ("darts", "autodeeplab", "order", "checkpoint", "hessian")
DEFAULT_JOB = "camvid_darts"  # the hessian suite's search job, shipped in nasseg/jobs


@dataclass
class Settings:
    suites: tuple[str, ...] = DEFAULT_SUITES
    device: str = "cpu"
    threads: int = 1
    repeats: int = 3
    warmup: int = 1
    quick: bool = False
    darts_space: str = "darts_cifar"
    adl_crops: tuple[int, ...] = (129, 321)
    job: str | None = None  # hessian suite: job file or built-in job name; None: DEFAULT_JOB (quick: a tiny job)
    epoch_steps: int = 10  # hessian suite: 0 = time the whole epoch
    ray_trials: int | None = None
    peer_dir: str = "../shared/peerbench"  # peers suite: the side-by-side scripts of the original codes
    memory: str = "subprocess"  # subprocess | inprocess | off
    seed: int = 0
    progress: bool = True

    def darts_net(self) -> NetConfig:
        if self.quick:
            return NetConfig(self.darts_space, 2, 3, 10, 2, (8, 8))
        return NetConfig(self.darts_space, 16, 8, 10, 64, (32, 32))

    def adl_nets(self) -> list[NetConfig]:
        width, layers, classes = (2, 2, 5) if self.quick else (8, 12, 19)
        return [NetConfig("autodeeplab", width, layers, classes, 2, (c, c)) for c in self.adl_crops]


def parse_names(text: str, flag: str, what: str, known: Sequence[str], more: str = "") -> tuple[str, ...]:
    """A comma-separated list of names out of ``known``; NassegError naming ``flag`` otherwise."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise NassegError(f"{flag}: unknown {what} {', '.join(unknown) or '(none)'}; expected a comma-separated "
                          f"list of {', '.join(known)}{more}")
    return names


def parse_suites(text: str) -> tuple[str, ...]:
    if [t.strip() for t in text.split(",") if t.strip()] == ["all"]:
        return SUITES
    return tuple(dict.fromkeys(parse_names(text, "--suite", "suite", SUITES, " or all")))


# the suites' targets, per (suite, metric): ratio = measured / baseline must be <= bound
TARGETS = {
    ("darts", "step time"): 0.8, ("darts", "peak memory"): 0.7,
    ("autodeeplab", "step time"): 0.8, ("autodeeplab", "peak memory"): 0.7,
    ("checkpoint", "step time"): 1.5, ("checkpoint", "peak memory"): 1 / 2.5,
    ("order", "step time"): 2.5,
    ("hessian", "eigen share"): 0.10, ("hessian", "eigen share, paper setting"): 0.05,
}


@dataclass
class Row:
    suite: str
    config: str
    metric: str  # step time | arch step time | weight step time | peak memory | saved for backward | ...
    compare: str  # what the ratio divides: "ours / straightforward", ...
    value: float | None
    baseline: float | None
    unit: str
    target: float | None = None  # ratio <= target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.value is not None and self.baseline else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None or self.ratio is None else self.ratio <= self.target

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(ratio=self.ratio, met=self.met)
        return data
