"""RobustDARTS stop rules and DARTS-ADA decisions on recorded eigenvalue sequences."""

from __future__ import annotations

import pytest

from nasseg.errors import NassegError
from nasseg.search.stop_rules import (DartsADA, NeverStop, PaperRule, ReleasedCodeRule, StopDecision,
                                      make_rule)


def first_stop(rule, eigenvalues, first_epoch: int = 0) -> StopDecision:
    """Feed a recorded sequence epoch by epoch; the first stopping decision (or the last one)."""
    for n in range(1, len(eigenvalues) + 1):
        decision = rule.check(eigenvalues[:n], first_epoch)
        if decision.stop:
            return decision
    return decision


# eigenvalue 1 for epochs 0..9, then 2
STEP_AT_10 = [1.0] * 10 + [2.0] * 10


def test_flat_sequence_never_stops():
    for rule in (PaperRule(), ReleasedCodeRule(), ReleasedCodeRule(start_epoch=0, lag=1)):
        decision = first_stop(rule, [0.3] * 50)
        assert not decision.stop and decision.epoch == 49


def test_paper_rule_by_hand():
    # k = 5, trailing windows. At epoch 10: lambda_bar(5) = mean(e1..e5) = 1,
    # lambda_bar(10) = mean(e6..e10) = (4 + 2) / 5 = 1.2, ratio 0.833 >= 0.75: go on.
    # At epoch 11: lambda_bar(6) = 1, lambda_bar(11) = (3 + 4) / 5 = 1.4, ratio 0.714 < 0.75: stop, return 6.
    rule = PaperRule(window=5, ratio=0.75)
    assert not rule.check(STEP_AT_10[:11]).stop
    decision = first_stop(rule, STEP_AT_10)
    assert (decision.stop, decision.epoch, decision.return_epoch) == (True, 11, 6)
    assert "0.714" in decision.reason and "1.4" in decision.reason
    # the same sequence recorded from epoch 20 on shifts both epochs
    decision = first_stop(rule, STEP_AT_10, first_epoch=20)
    assert (decision.epoch, decision.return_epoch) == (31, 26)


def test_paper_rule_needs_two_windows():
    rule = PaperRule(window=3)
    assert not rule.check([1.0, 1.0, 1.0, 1.0, 9.0]).stop  # 5 < 2k = 6 eigenvalues
    decision = rule.check([1.0, 1.0, 1.0, 1.0, 9.0, 9.0])  # (1+1+1)/3 / (1+9+9)/3 = 0.158
    assert (decision.stop, decision.epoch, decision.return_epoch) == (True, 5, 2)
    assert not rule.check([-1.0] * 3 + [-2.0] * 3).stop  # non-positive means never stop


def test_released_rule_by_hand():
    # eigenvalue 1 for epochs 0..13, then 3. Local average la(t) = mean(e[t-4..t]), centred on t-2;
    # at epoch t the check compares la(t) with la(t-4) and would return epoch t-6, so it
    # starts at t = 16 (t-6 >= 10). At t = 14 it would fire already (la(14) = (4+3)/5 = 1.4 > 1.3 * 1,
    # return 8) ...
    sequence = [1.0] * 14 + [3.0] * 10
    early = first_stop(ReleasedCodeRule(start_epoch=0), sequence)
    assert (early.epoch, early.return_epoch) == (14, 8)
    # ... but with start_epoch 10: at t = 16, la(16) = (1+1+3+3+3)/5 = 2.2 > 1.3 * la(12) = 1.3: stop, return 10
    decision = first_stop(ReleasedCodeRule(), sequence)
    assert (decision.stop, decision.epoch, decision.return_epoch) == (True, 16, 10)
    assert "2.2" in decision.reason and "1.3" in decision.reason


def test_released_rule_short_windows():
    # before `window` eigenvalues exist, a local average is the mean of all so far (from ceil(5/2) = 3 on).
    # window 5, lag 1, start 0: first check at t = 3: la(3) = mean(e0..e3) = 2 vs la(2) = mean(e0..e2) = 1
    rule = ReleasedCodeRule(window=5, factor=1.3, start_epoch=0, lag=1)
    assert not rule.check([1.0, 1.0, 1.0]).stop
    decision = rule.check([1.0, 1.0, 1.0, 5.0])
    assert (decision.stop, decision.epoch, decision.return_epoch) == (True, 3, 0)


def test_released_growth_below_factor_goes_on():
    # a 20 % step never exceeds 1.3x
    assert not first_stop(ReleasedCodeRule(), [1.0] * 14 + [1.2] * 20).stop


def test_ada_rollbacks_then_stop():
    # window 2: stop at i when mean(e[i-3..i-2]) / mean(e[i-1..i]) < 0.75, roll back to i-2
    ada = DartsADA(PaperRule(window=2, ratio=0.75), factor=10, max_wd=1e-2)
    wd = 1e-4
    actions = [ada.observe(epoch, value, wd) for epoch, value in enumerate([1.0, 1.0, 1.0])]
    assert [a.action for a in actions] == ["continue"] * 3
    action = ada.observe(3, 3.0, wd)  # (1+1)/2 / (1+3)/2 = 0.5
    assert (action.action, action.epoch, action.return_epoch) == ("rollback", 3, 1)
    assert action.weight_decay == pytest.approx(1e-3)
    assert ada.history == [1.0, 1.0] and ada.rollbacks == 1
    wd = action.weight_decay

    with pytest.raises(ValueError, match="epoch 2"):
        ada.observe(4, 1.0, wd)  # after the rollback the search resumes at epoch 2
    assert ada.observe(2, 1.0, wd).action == "continue"
    action = ada.observe(3, 5.0, wd)  # (1+1)/2 / (1+5)/2 = 0.33
    assert (action.action, action.return_epoch) == ("rollback", 1)
    assert action.weight_decay == pytest.approx(1e-2)  # 1e-4 * 10 * 10 passes the bound despite rounding
    wd = action.weight_decay

    ada.observe(2, 1.0, wd)
    action = ada.observe(3, 5.0, wd)
    assert (action.action, action.epoch, action.return_epoch) == ("stop", 3, 1)
    assert action.weight_decay == wd and "bound" in action.reason


def test_ada_max_rollbacks():
    ada = DartsADA(PaperRule(window=1, ratio=0.75), max_wd=None, max_rollbacks=1)
    assert ada.observe(0, 1.0, 3e-4).action == "continue"
    assert ada.observe(1, 2.0, 3e-4).action == "rollback"
    assert ada.observe(1, 2.0, 3e-3).action == "stop"
    with pytest.raises(ValueError, match="bound"):
        DartsADA(PaperRule(), max_wd=None, max_rollbacks=None)


def test_make_rule():
    assert make_rule(None) == PaperRule()
    assert make_rule({"rule": "paper", "window": 3, "ratio": 0.5}) == PaperRule(3, 0.5)
    assert make_rule({"rule": "released", "lag": 2}) == ReleasedCodeRule(lag=2)
    assert make_rule({"rule": "none"}) == NeverStop()
    ada = make_rule({"rule": "paper", "window": 5, "ratio": 0.75, "ada": {"factor": 10, "max_rollbacks": 3}})
    assert isinstance(ada, DartsADA)
    assert (ada.rule, ada.factor, ada.max_wd, ada.max_rollbacks) == (PaperRule(), 10.0, None, 3)
    assert make_rule({"ada": True}).max_wd == 3e-2


@pytest.mark.parametrize("config, message", [
    ({"rule": "papr"}, "did you mean 'paper'"),
    ({"rule": "paper", "factor": 1.3}, "early_stop.factor: unknown key"),
    ({"window": 0}, "early_stop.window: must be >= 1"),
    ({"ratio": "big"}, "early_stop.ratio: expected a number"),
    ({"ada": {"factr": 10}}, "early_stop.ada.factr: unknown key"),
    ({"ada": {"factor": 0.5}}, "early_stop.ada.factor: must be > 1"),
    ({"rule": "none", "ada": True}, "needs a stop rule"),
])
def test_make_rule_errors(config, message):
    with pytest.raises(NassegError, match=message):
        make_rule(config)
