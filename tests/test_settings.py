"""The search's settings and its pick: the rules the search, the API and the dashboard share."""
import pytest

from search_core.best import best_sample, better
from search_core.config import DEFAULT_WEIGHTS, ConfigError, SearchConfig


def sample(objective, feasible, uses_budget=None):
    s = {"objective": objective, "feasible": feasible}
    if uses_budget is not None:
        s["uses_budget"] = uses_budget
    return s


def test_the_pick_meets_every_target_and_has_the_highest_objective():
    samples = [sample(0.70, True), sample(0.95, False), sample(0.80, True), sample(0.75, True)]
    assert best_sample(samples) is samples[2]  # not the infeasible one, whatever its objective
    tie = sample(0.80, True)
    assert best_sample(samples + [tie]) is tie  # the later sample: its supernet trained longer
    assert best_sample([]) is None


def test_while_no_sample_meets_the_targets_the_objective_decides():
    infeasible = [sample(0.5, False), sample(0.7, False), sample(None, False)]
    assert best_sample(infeasible) is infeasible[1]
    assert better(sample(0.1, True), infeasible[1])  # the first feasible one takes over


def test_a_sample_that_uses_the_budget_beats_a_faster_one():
    """Within [0.85 T, T] first, whatever the objective; a sample from before the field counts as
    using it."""
    under = sample(0.90, True, uses_budget=False)
    at_t = sample(0.70, True, uses_budget=True)
    assert best_sample([at_t, under]) is at_t and best_sample([under, at_t]) is at_t
    assert best_sample([at_t, sample(0.75, True)])["objective"] == 0.75  # no field: as before
    assert better(sample(0.1, True, uses_budget=False), sample(0.9, False, uses_budget=True))


def test_only_the_absolute_form_asks_to_use_the_budget():
    from search_core.objectives import BUDGET_FLOOR, Constraint
    absolute = Constraint("latency_ms", 10.0, -0.5, "absolute")
    assert absolute.uses_budget(BUDGET_FLOOR * 10.0) and absolute.uses_budget(10.0)
    assert not absolute.uses_budget(BUDGET_FLOOR * 10.0 - 1e-6)
    for form in ("soft", "hard"):
        assert Constraint("latency_ms", 10.0, -0.07, form).uses_budget(1.0)


def test_the_default_constraint_is_absolute_and_the_old_forms_stay():
    config = SearchConfig().validate()
    assert config.constraint == "absolute"
    assert config.weight == DEFAULT_WEIGHTS["gradient"]["absolute"]
    assert [c.form for c in SearchConfig(target_latency_ms=3.0).constraints()] == ["absolute"]
    for form in ("soft", "hard"):
        assert SearchConfig(constraint=form, target_latency_ms=3.0).constraints()[0].form == form
    with pytest.raises(ConfigError, match="constraint"):
        SearchConfig(constraint="lagrange").validate()


@pytest.mark.parametrize("hard, form", [(True, "hard"), (False, "soft")])
def test_settings_of_runs_from_before_the_constraint_forms_keep_their_objective(hard, form):
    """A config.json written with hard_constraint resumes with the form it searched with."""
    assert SearchConfig.from_dict({"hard_constraint": hard, "epochs": 30}).constraint == form
