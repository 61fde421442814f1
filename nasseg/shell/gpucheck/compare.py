"""One row of the GPU check's table (:class:`Comparison`) and the rules that make it: values
within a relative bound, values that must be equal, a measurement without a bound, a skip."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from .tolerances import EXACT

# what a row's status can be; only FAIL and error make the check fail
PASS, FAIL, INFO, SKIPPED, ERROR = "pass", "FAIL", "info", "skipped", "error"


@dataclass
class Comparison:
    check: str  # the check that measured it (settings.CHECKS)
    quantity: str  # what was compared
    reference: str  # the CPU's value(s), as shown in the table
    measured: str  # the device's value(s)
    difference: float | None  # the largest relative difference (0 = exact), None when not compared
    bound: float | None  # the largest allowed; 0: must be equal; None: no bound
    status: str
    note: str = ""


def relative_difference(reference: float, measured: float) -> float:
    """|measured - reference| / |reference| (absolute when the reference is 0); inf for NaN/inf."""
    if not (math.isfinite(reference) and math.isfinite(measured)):
        return 0.0 if reference == measured else math.inf
    return abs(measured - reference) / (abs(reference) or 1.0)


def show(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def within(check: str, quantity: str, reference: Sequence[float], measured: Sequence[float], bound: float,
           note: str = "") -> Comparison:
    """Each measured value within ``bound`` (relative) of its reference; the worst one reported."""
    if len(reference) != len(measured):
        return Comparison(check, quantity, show(reference), show(measured), None, bound, FAIL,
                          f"{len(measured)} values against {len(reference)} on the CPU. {note}".strip())
    worst = max((relative_difference(r, m) for r, m in zip(reference, measured)), default=0.0)
    return Comparison(check, quantity, show(reference), show(measured), worst, bound,
                      PASS if worst <= bound else FAIL, note)


def bounded(check: str, quantity: str, differences: Sequence[float], bound: float | None, note: str = "") -> Comparison:
    """Differences computed elsewhere (e.g. of parameter updates), the worst one within ``bound``;
    ``bound`` None: reported only."""
    worst = max(differences, default=0.0)
    status = INFO if bound is None else (PASS if worst <= bound else FAIL)
    return Comparison(check, quantity, "-", show(differences), worst, bound, status, note)


def equal(check: str, quantity: str, reference: Any, measured: Any, shown_reference: str, shown_measured: str,
          note: str = "", required: bool = True) -> Comparison:
    """``measured == reference`` exactly; ``required=False``: reported (info) but not a failure."""
    same = measured == reference
    status = (PASS if same else FAIL) if required else INFO
    return Comparison(check, quantity, shown_reference, shown_measured, 0.0 if same else 1.0,
                      EXACT if required else None, status, note)


def measured_only(check: str, quantity: str, reference: str, measured: str, ok: bool, note: str = "") -> Comparison:
    """A measurement that has no CPU value to agree with: pass when it ran as it should (``ok``)."""
    return Comparison(check, quantity, reference, measured, None, None, PASS if ok else FAIL, note)


def skipped(check: str, quantity: str, reason: str) -> Comparison:
    return Comparison(check, quantity, "-", "-", None, None, SKIPPED, reason)


def errored(check: str, error: BaseException) -> Comparison:
    """A check that raised: one line naming the exception (the other checks still run)."""
    message = " ".join(str(error).split())
    message = message if len(message) <= 300 else message[:297] + "..."
    return Comparison(check, "(the check raised)", "-", "-", None, None, ERROR, f"{type(error).__name__}: {message}")

