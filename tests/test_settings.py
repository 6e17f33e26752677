"""The search's settings and its pick: the rules the search, the API and the dashboard share."""
import pytest

from search_core.best import best_sample, better, explain, latest
from search_core.settings import DEFAULT_WEIGHTS, ConfigError, SearchConfig

pytestmark = pytest.mark.unit

DASHBOARD_CONFIG = {"LOCAL_AGENT": False}


def sample(accuracy, feasible, uses_budget=None, objective=None, arch_hash=None):
    s = {"accuracy": accuracy, "objective": accuracy if objective is None else objective,
         "feasible": feasible, "arch_hash": arch_hash or "h{}".format(accuracy)}
    if uses_budget is not None:
        s["uses_budget"] = uses_budget
    return s


def test_the_pick_is_the_most_accurate_sample_that_meets_every_target():
    samples = [sample(0.70, True), sample(0.95, False), sample(0.80, True), sample(0.75, True)]
    assert best_sample(samples) is samples[2]  # not the infeasible one, whatever its accuracy
    tie = sample(0.80, True)
    assert best_sample(samples + [tie]) is tie  # the later sample: its supernet trained longer
    assert best_sample([]) is None


def test_the_budget_penalty_does_not_choose_the_pick():
    """A run picked 52.9% at 0.93 T beside 83.3% at 0.85 T: the absolute objective's penalty
    for unused budget (w |v/T - 1|) outweighed 30 points of accuracy."""
    close_to_t = sample(0.529, True, uses_budget=True, objective=0.529 - 0.5 * 0.07)
    more_accurate = sample(0.833, True, uses_budget=True, objective=0.833 - 0.5 * 0.15 - 0.3)
    assert best_sample([more_accurate, close_to_t]) is more_accurate
    assert best_sample([close_to_t, more_accurate]) is more_accurate


def test_among_each_architecture_as_last_measured_a_pick_measured_again_out_of_the_band_loses():
    """A specialisation measures its finalists again and picks among each architecture's latest
    sample: the rounds, not the one measurement, decide."""
    first = sample(0.90, True, uses_budget=True, arch_hash="a")
    runner_up = sample(0.85, True, uses_budget=True, arch_hash="b")
    again = sample(0.90, True, uses_budget=False, arch_hash="a")  # 0.81 T in its rounds
    samples = [first, runner_up, again]
    assert latest(samples) == [runner_up, again]
    assert best_sample(latest(samples)) is runner_up
    assert best_sample(samples) is first  # every evaluation as taken: the stale one would win


def test_the_soft_form_ranks_by_its_objective():
    """MnasNet's soft form trades accuracy for speed everywhere, by the user's w."""
    slow = sample(0.90, True, objective=0.80)
    fast = sample(0.85, True, objective=0.84)
    assert best_sample([slow, fast], "soft") is fast
    assert best_sample([slow, fast], "absolute") is slow and best_sample([slow, fast], "hard") is slow


def test_while_no_sample_meets_the_targets_the_objective_decides():
    """The objective weighs the miss: not the most accurate network far over T."""
    infeasible = [sample(0.5, False), sample(0.9, False, objective=0.4), sample(0.7, False),
                  sample(None, False, objective=None)]
    assert best_sample(infeasible) is infeasible[2]
    assert better(sample(0.1, True), infeasible[2])  # the first feasible one takes over


def test_a_sample_that_uses_the_budget_beats_a_faster_one():
    """Within [0.85 T, T] first, whatever the accuracy; a sample from before the field counts as
    using it."""
    under = sample(0.90, True, uses_budget=False)
    at_t = sample(0.70, True, uses_budget=True)
    assert best_sample([at_t, under]) is at_t and best_sample([under, at_t]) is at_t
    assert best_sample([at_t, sample(0.75, True)])["accuracy"] == 0.75  # no field: as before
    assert better(sample(0.1, True, uses_budget=False), sample(0.9, False, uses_budget=True))


def test_the_explanation_counts_the_candidates_and_names_the_runners_up_within_noise():
    pick = sample(0.90, True, True, arch_hash="a")
    close = sample(0.89, True, True, arch_hash="b")  # 1 point: within the noise of 500 images
    far = sample(0.80, True, True, arch_hash="c")
    fast = sample(0.95, True, False, arch_hash="d")  # under 0.85 T: not in the pick's group
    over = sample(0.99, False, True, arch_hash="e")
    again = sample(0.70, True, True, arch_hash="c")  # c evaluated again later: counted once
    why = explain([close, far, fast, over, again, pick], pick, val_size=500)
    assert (why["architectures"], why["feasible"], why["in_band"]) == (5, 4, 3)
    assert why["ranked_by"] == "accuracy" and why["pick_in_band"]
    assert why["noise"] == pytest.approx(1.96 * (2 * 0.9 * 0.1 / 500) ** 0.5)
    assert [(r["arch_hash"], r["within_noise"]) for r in why["runners_up"]] == [("b", True), ("c", False)]
    assert why["runners_up"][1]["accuracy"] == 0.70  # c as last seen
    assert explain([pick], pick)["noise"] is None  # no validation size: no claim
    assert explain([], None) is None


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


class Drawn(Exception):
    """Raised where a dataset is loaded: its arguments are all a test of the split needs."""


@pytest.mark.parametrize("split", [{}, {"split_seed": 9}])
def test_a_dashboard_retraining_draws_the_split_its_run_searched_on(monkeypatch, tmp_path, split):
    """The retraining's test accuracy means something only on images the search never chose by:
    its `train` worker loads the run's dataset with the run's split seed, whatever its own seed."""
    from types import SimpleNamespace

    from nano_agent.space import SearchSpace
    from search_core import cli, data
    from search_core.search import Search
    from webapp.workers.training import train_command, write_training_files

    loaded = []

    def load_dataset(name, resolution, seed, data_dir=None, **kwargs):
        loaded.append((name, seed, data_dir, kwargs.get("limit")))
        raise Drawn
    monkeypatch.setattr(data, "load_dataset", load_dataset)
    monkeypatch.setattr(cli, "load_dataset", load_dataset)
    config = SearchConfig(dataset="shapes", seed=4, limit=128, **split)
    with pytest.raises(Drawn):
        Search(config, str(tmp_path / "run"), None).run()
    training = SimpleNamespace(directory=str(tmp_path / "training"), epochs=3, seed=11,
                               arch_json=SearchSpace(0.5, 32, 10, 1).mobilenet_v2().to_json())
    write_training_files(training, config.to_dict())
    with pytest.raises(Drawn):
        cli.main(train_command(training)[3:])
    searched, retrained = loaded
    assert retrained == searched and searched[1] == split.get("split_seed", 4)


def test_a_settings_range_is_declared_once(monkeypatch, client, tmp_path, capsys):
    """search_core.settings.LIMITS (built from the settings' declarations) bounds the CLI, the API
    and the form (which takes its bounds from /api/defaults): a range changed there changes all
    three, the CLI's help too."""
    from nano_agent.limits import Limit
    from search_core import cli, settings
    monkeypatch.setitem(settings.LIMITS, "epochs", Limit(1, 7))
    assert cli.main(["search", "--out", str(tmp_path / "run"), "--epochs", "8"]) == 2
    assert "epochs must be in [1, 7]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    assert "included; default 45; in [1, 7]" in " ".join(capsys.readouterr().out.split())
    r = client.post("/api/runs", json={"epochs": 8, "warmup_epochs": 1})
    assert r.status_code == 400 and r.get_json()["errors"]["epochs"] == "must be in [1, 7]"
    epochs = client.get("/api/defaults").get_json()["described"]["epochs"]
    assert (epochs["min"], epochs["max"]) == (1, 7)


def test_every_setting_has_a_flag_and_the_forms_fields_are_the_declared_ones(client):
    """The CLI's flags and the form's fields are generated from the declarations: a setting added
    to SearchConfig gets its flag (and its field, where it says so) with nothing else to edit."""
    from dataclasses import fields
    from search_core import cli, settings
    args = vars(cli.parser().parse_args(["search", "--out", "run"]))
    assert all(args[f.name] == f.default for f in fields(settings.SearchConfig))
    page = client.get("/runs/new").get_data(as_text=True)
    shown = {name for _, section in settings.form_sections() for name, _ in section}
    assert shown and all('id="f-{}"'.format(name) in page for name in shown)
    hidden = {f.name for f in fields(settings.SearchConfig)} - shown
    assert not any('id="f-{}"'.format(name) in page for name in hidden)
