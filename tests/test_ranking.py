"""search_core/ranking.py: which architectures a ranking check retrains, and how it measures the
agreement of the two rankings."""
import pytest
from scipy.stats import kendalltau

from search_core.ranking import agreement, spread

pytestmark = pytest.mark.unit


def samples(accuracies):
    return [{"arch_hash": "h{}".format(i), "accuracy": a} for i, a in enumerate(accuracies)]


def test_the_spread_takes_both_ends_and_evenly_spaced_ranks_between():
    chosen = spread(samples([0.1 * i for i in range(11)]), 3)
    assert [s["arch_hash"] for s in chosen] == ["h10", "h5", "h0"]  # most accurate first


def test_the_pick_is_always_checked_in_place_of_the_nearest_inner_choice():
    chosen = spread(samples([0.1 * i for i in range(11)]), 3, pick_hash="h7")
    assert [s["arch_hash"] for s in chosen] == ["h10", "h7", "h0"]
    chosen = spread(samples([0.1 * i for i in range(11)]), 2, pick_hash="h4")
    assert "h4" in [s["arch_hash"] for s in chosen] and len(chosen) == 2


def test_an_architecture_counts_once_at_its_last_evaluation_and_fewer_give_fewer():
    evaluated = [{"arch_hash": "a", "accuracy": 0.9}, {"arch_hash": "b", "accuracy": 0.5},
                 {"arch_hash": "a", "accuracy": 0.2}]
    assert spread(evaluated, 5) == [{"arch_hash": "b", "accuracy": 0.5},
                                    {"arch_hash": "a", "accuracy": 0.2}]


def test_agreement_is_kendalls_tau_with_its_p_value():
    shared, standalone = [0.5, 0.6, 0.7, 0.8, 0.9], [0.91, 0.9, 0.95, 0.97, 0.99]
    tau, p_value = agreement(shared, standalone)
    expected = kendalltau(shared, standalone)
    assert tau == pytest.approx(expected[0]) and p_value == pytest.approx(expected[1])
    assert agreement([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)


def test_no_agreement_is_claimed_from_too_few_or_a_flat_ranking():
    assert agreement([0.5, 0.6], [0.9, 0.8]) == (None, None)
    assert agreement([0.5, 0.6, 0.7], [0.9, 0.9, 0.9]) == (None, None)
