"""RobustDARTS early stopping on the dominant Hessian eigenvalue, and DARTS-ADA.

Rules read the eigenvalue of every epoch so far (``eigenvalues[j]`` belongs to epoch
``first_epoch + j``) and say whether to stop now and which epoch's architecture to return.
They are pure functions of that list; :class:`DartsADA` adds the adaptive-regularisation
decisions (roll back, raise the weight decay) and keeps the history across rollbacks. Applying
a decision (restoring a checkpoint, changing the optimizer) is the search loop's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping, Protocol, Sequence

from pydantic import BeforeValidator, Field, model_validator

from ..config import FieldError, spec, validate
from ..config.types import Float, NonNegativeInt, PositiveFloat, PositiveInt


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    epoch: int | None = None  # the epoch the decision was taken at (the latest eigenvalue)
    return_epoch: int | None = None  # the epoch whose architecture to keep when stopping
    reason: str = ""


def _mean(values: Sequence[float]) -> float:
    """sum / len, as the rule has always computed it (statistics.fmean rounds differently in the last bit,
    which could move a ratio that lands on its threshold)."""
    return sum(values) / len(values)

class StopRule(Protocol):
    def check(self, eigenvalues: Sequence[float], first_epoch: int = 0) -> StopDecision: ...


@dataclass(frozen=True)
class PaperRule:
    """Zela et al. 2020, Sec. 4.3: stop at epoch i when lambda_bar(i-k) / lambda_bar(i) < ratio
    and return the architecture of epoch i-k.

    lambda_bar(i) is the mean eigenvalue of the k most recent epochs, i-k+1..i (a trailing
    window), so the rule can be evaluated at epoch i itself. The paper's "window around i" would
    centre it on i; with the data available at epoch i that takes the same decision at the same
    epoch but names i-k-k//2 as the epoch to return (:class:`ReleasedCodeRule` uses centred
    windows). The first check needs 2k eigenvalues; a non-positive lambda_bar(i) never stops.
    """

    window: int = 5
    ratio: float = 0.75

    def check(self, eigenvalues: Sequence[float], first_epoch: int = 0) -> StopDecision:
        k, n = self.window, len(eigenvalues)
        epoch = first_epoch + n - 1
        if n < 2 * k:
            return StopDecision(False, epoch, reason=f"waiting for {2 * k} eigenvalues, have {n}")
        now, before = _mean(eigenvalues[n - k:]), _mean(eigenvalues[n - 2 * k:n - k])
        if now <= 0:
            return StopDecision(False, epoch, reason=f"mean eigenvalue {now:.4g} at epoch {epoch} is not positive")
        ratio = before / now
        stop = ratio < self.ratio
        reason = (f"lambda_bar({epoch - k}) / lambda_bar({epoch}) = {before:.4g} / {now:.4g} = {ratio:.3f} "
                  f"{'<' if stop else '>='} {self.ratio}")
        return StopDecision(stop, epoch, epoch - k if stop else None, reason)


@dataclass(frozen=True)
class ReleasedCodeRule:
    """The rule of the released RobustDARTS code (``EVLocalAvg.early_stop``), one eigenvalue per epoch.

    Local average at epoch t: the mean of the last ``window`` eigenvalues (fewer while fewer
    exist, from ceil(window/2) on), attributed to the window's centre c(t) = t - window//2. At
    epoch t, with p = c(t) - lag: if p >= start_epoch, stop when la(t) / la(t - lag) > factor
    (la(t - lag) > 0) and return the architecture of epoch p. With the defaults the first check is
    at epoch 16. Left out: the released tracker's extra averages at the very last epoch, where it
    never checks.
    """

    window: int = 5
    factor: float = 1.3
    start_epoch: int = 10
    lag: int = 4

    def _local_average(self, eigenvalues: Sequence[float], j: int) -> float:
        return _mean(eigenvalues[max(0, j - self.window + 1):j + 1])

    def check(self, eigenvalues: Sequence[float], first_epoch: int = 0) -> StopDecision:
        n = len(eigenvalues)
        epoch = first_epoch + n - 1
        return_epoch = epoch - self.window // 2 - self.lag
        if return_epoch < max(self.start_epoch, first_epoch):
            return StopDecision(False, epoch, reason=f"no check before the return epoch reaches "
                                f"{self.start_epoch} (it is {return_epoch})")
        current = self._local_average(eigenvalues, n - 1)
        previous = self._local_average(eigenvalues, n - 1 - self.lag)
        stop = previous > 0 and current / previous > self.factor
        centre = epoch - self.window // 2
        reason = (f"local average at epoch {centre} = {current:.4g}, at epoch {return_epoch} = "
                  f"{previous:.4g}: ratio {current / previous if previous else float('inf'):.3f} "
                  f"{'>' if stop else '<='} {self.factor}")
        return StopDecision(stop, epoch, return_epoch if stop else None, reason)


@dataclass(frozen=True)
class NeverStop:
    """Early stopping switched off (``rule: none``)."""

    def check(self, eigenvalues: Sequence[float], first_epoch: int = 0) -> StopDecision:
        return StopDecision(False, first_epoch + len(eigenvalues) - 1, reason="early stopping is off")


@dataclass(frozen=True)
class AdaAction:
    action: str  # "continue" | "rollback" | "stop"
    epoch: int  # the epoch the decision was taken at
    return_epoch: int | None  # rollback: restore the state saved at the end of this epoch; stop: keep its architecture
    weight_decay: float  # the weight decay to search with from now on
    reason: str


@dataclass
class DartsADA:
    """DARTS-ADA (Zela et al. 2020): on the rule's signal, roll back to the return epoch and
    multiply the weight decay by ``factor``; once that would pass ``max_wd`` or exceed
    ``max_rollbacks``, stop instead (plain early stopping).

    Feed one eigenvalue per epoch with :meth:`observe`. A rollback to epoch r truncates the
    history to epochs <= r, as the released code does by restoring its eigenvalue tracker from
    the epoch-r checkpoint; the next observed epoch must be r+1.
    """

    rule: StopRule
    factor: float = 10.0
    max_wd: float | None = 3e-2
    max_rollbacks: int | None = None
    history: list[float] = field(default_factory=list)
    first_epoch: int = 0
    rollbacks: int = 0

    def __post_init__(self) -> None:
        if self.max_wd is None and self.max_rollbacks is None:
            raise ValueError("DartsADA needs a bound: max_wd or max_rollbacks")

    def observe(self, epoch: int, eigenvalue: float, weight_decay: float) -> AdaAction:
        if not self.history:
            self.first_epoch = epoch
        elif epoch != self.first_epoch + len(self.history):
            raise ValueError(f"expected the eigenvalue of epoch {self.first_epoch + len(self.history)}, "
                             f"got epoch {epoch}")
        self.history.append(float(eigenvalue))
        decision = self.rule.check(self.history, self.first_epoch)
        if not decision.stop:
            return AdaAction("continue", epoch, None, weight_decay, decision.reason)
        target = decision.return_epoch
        if (self.max_rollbacks is not None and self.rollbacks >= self.max_rollbacks) or \
                (self.max_wd is not None and weight_decay * self.factor > self.max_wd * (1 + 1e-9)):
            return AdaAction("stop", epoch, target, weight_decay,
                             f"{decision.reason}; weight decay {weight_decay:.3g} is at its bound "
                             f"after {self.rollbacks} rollback(s)")
        self.rollbacks += 1
        del self.history[target - self.first_epoch + 1:]
        raised = weight_decay * self.factor
        return AdaAction("rollback", epoch, target, raised,
                         f"{decision.reason}; rollback {self.rollbacks} to epoch {target}, "
                         f"weight decay {weight_decay:.3g} -> {raised:.3g}")


# --- the ``early_stop`` section of a search job ----------------------------------------------------

@spec
class AdaSpec:
    """DARTS-ADA: on the rule's signal roll back and multiply the weight decay by ``factor``."""

    factor: Annotated[Float, Field(gt=1)] = 10.0
    max_wd: PositiveFloat | None = None  # default 3e-2 unless only max_rollbacks bounds the rollbacks
    max_rollbacks: NonNegativeInt | None = None


def _ada(value: Any) -> Any:
    """``ada: true`` takes the defaults, ``ada: false`` (the default) switches it off."""
    return AdaSpec() if value is True else None if value is False else value


Ada = Annotated[AdaSpec | None, BeforeValidator(_ada)]


@spec
class PaperStop:
    """``rule: paper``: :class:`PaperRule` (the default)."""

    rule: Literal["paper"] = "paper"
    window: PositiveInt = PaperRule.window
    ratio: PositiveFloat = PaperRule.ratio
    ada: Ada = None


@spec
class ReleasedStop:
    """``rule: released``: :class:`ReleasedCodeRule`."""

    rule: Literal["released"]
    window: PositiveInt = ReleasedCodeRule.window
    factor: PositiveFloat = ReleasedCodeRule.factor
    start_epoch: NonNegativeInt = ReleasedCodeRule.start_epoch
    lag: PositiveInt = ReleasedCodeRule.lag
    ada: Ada = None


@spec
class NoStop:
    """``rule: none``: early stopping off."""

    rule: Literal["none"]

    @model_validator(mode="before")
    @classmethod
    def _no_ada(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("ada") not in (None, False):
            raise FieldError("ada", "DARTS-ADA needs a stop rule; set rule to paper or released")
        return {k: v for k, v in data.items() if k != "ada"} if isinstance(data, dict) else data

    @property
    def ada(self) -> None:
        return None


def _default_rule(value: Any) -> Any:
    return {**value, "rule": "paper"} if isinstance(value, dict) and "rule" not in value else value


EarlyStop = Annotated[Annotated[PaperStop | ReleasedStop | NoStop, Field(discriminator="rule")], BeforeValidator(_default_rule)]


def make_rule(config: PaperStop | ReleasedStop | NoStop | Mapping[str, Any] | None = None,
              file: str | None = None, key: str = "early_stop") -> StopRule | DartsADA:
    """The rule an ``early_stop`` section describes, e.g. ``{rule: paper, window: 5, ratio: 0.75,
    ada: {factor: 10, max_rollbacks: 3}}`` (a mapping is validated first; SpecError names ``key``)."""
    if not isinstance(config, (PaperStop, ReleasedStop, NoStop)):
        config = validate(EarlyStop, {} if config is None else config, file, key)
    if isinstance(config, NoStop):
        return NeverStop()
    rule: StopRule = (PaperRule(config.window, config.ratio) if isinstance(config, PaperStop)
                      else ReleasedCodeRule(config.window, config.factor, config.start_epoch, config.lag))
    ada = config.ada
    if ada is None:
        return rule
    max_wd = ada.max_wd if ada.max_wd is not None or ada.max_rollbacks is not None else DartsADA.max_wd
    return DartsADA(rule, ada.factor, max_wd, ada.max_rollbacks)

