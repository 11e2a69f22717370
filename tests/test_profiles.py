import pytest

from precode.profiles import get_profile


def test_default_is_quick(monkeypatch):
    monkeypatch.delenv("PRECODE_PROFILE", raising=False)
    assert get_profile().name == "quick"


def test_env_selects_full(monkeypatch):
    monkeypatch.setenv("PRECODE_PROFILE", "FULL")
    p = get_profile()
    assert p.name == "full" and p.victims >= get_profile("quick").victims
    assert p.ig_iterations > get_profile("quick").ig_iterations
    assert "full" in str(p)


def test_unknown_profile(monkeypatch):
    monkeypatch.setenv("PRECODE_PROFILE", "medium")
    with pytest.raises(ValueError, match="unknown profile 'medium'"):
        get_profile()


@pytest.mark.parametrize("name", ["quick", "full"])
def test_lbfgs_never_gets_a_larger_budget_than_inverting_gradients(name):
    p = get_profile(name)
    assert 25 * p.dlg_iterations <= p.ig_iterations * p.ig_restarts  # at most 25 evaluations per L-BFGS iteration
    assert 25 * p.dlg_iterations >= 0.9 * p.ig_iterations  # and not a much smaller one


@pytest.mark.parametrize("name", ["quick", "full"])
def test_chapter_4s_budget_is_checked_against_a_longer_one(name):
    # chapter 4 attacks its strongest levels again with ig_iterations: that must be the longer budget
    p = get_profile(name)
    assert 1 <= p.defense_iterations <= p.ig_iterations
