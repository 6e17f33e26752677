"""webapp.pareto: the (accuracy up, latency down) front and its incremental update."""
import math
import random
from types import SimpleNamespace

import pytest

from webapp.pareto import front_delta, front_of_sorted, pareto_front, update_front

pytestmark = pytest.mark.unit


def ids(front):
    return [p[0] if isinstance(p, tuple) else p.id for p in front]


def brute_force(points):
    """O(n^2) definition: not dominated by any other point; of exact duplicates the first stays."""
    front = []
    for i, (pid, lat, acc) in enumerate(points):
        dominated = False
        for j, (_, lat2, acc2) in enumerate(points):
            if j == i:
                continue
            better_or_equal = lat2 <= lat and acc2 >= acc
            strictly = lat2 < lat or acc2 > acc
            if (better_or_equal and strictly) or (lat2 == lat and acc2 == acc and j < i):
                dominated = True
                break
        if not dominated:
            front.append((pid, lat, acc))
    return sorted(front, key=lambda p: p[1])


def test_empty():
    assert pareto_front([]) == []
    assert pareto_front(iter(())) == []
    assert update_front([], []) == ([], [], [])


def test_dominated_points_removed():
    pts = [(1, 10.0, 0.5), (2, 5.0, 0.6), (3, 20.0, 0.9), (4, 15.0, 0.8), (5, 16.0, 0.7)]
    # 1 is dominated by 2 (faster, more accurate); 5 by 4
    assert ids(pareto_front(pts)) == [2, 4, 3]


def test_ties():
    # same latency: only the most accurate stays, whatever the input order
    assert ids(pareto_front([(1, 5.0, 0.5), (2, 5.0, 0.7), (3, 5.0, 0.6)])) == [2]
    # same accuracy: only the fastest
    assert ids(pareto_front([(1, 6.0, 0.5), (2, 5.0, 0.5), (3, 7.0, 0.5)])) == [2]
    # exact duplicates: the first seen
    assert ids(pareto_front([(1, 5.0, 0.5), (2, 5.0, 0.5)])) == [1]
    assert ids(pareto_front([(2, 5.0, 0.5), (1, 5.0, 0.5)])) == [2]


def test_point_types_and_missing_values():
    pts = [
        SimpleNamespace(id="a", latency_ms=3.0, accuracy=0.4),
        {"id": "b", "latency_ms": 4.0, "accuracy": 0.6},
        (7, 2.0, 0.3),
        (8, None, 0.99),
        (9, 1.0, math.nan),
    ]
    assert ids_any(pareto_front(pts)) == [7, "a", "b"]


def ids_any(front):
    return [p["id"] if isinstance(p, dict) else (p[0] if isinstance(p, tuple) else p.id) for p in front]


def test_against_brute_force_random():
    rng = random.Random(1234)
    for trial in range(20):
        n = rng.randint(1, 300)
        # coarse values so that ties happen
        pts = [(i, float(rng.randint(1, 40)), rng.randint(0, 30) / 30) for i in range(n)]
        front = pareto_front(pts)
        assert front == brute_force(pts), trial
        lats = [p[1] for p in front]
        accs = [p[2] for p in front]
        assert lats == sorted(lats) and all(a < b for a, b in zip(accs, accs[1:]))


def test_update_front_matches_recompute():
    rng = random.Random(99)
    points = []
    front = []
    for step in range(40):
        batch = [
            (len(points) + k, float(rng.randint(1, 60)), rng.randint(0, 40) / 40)
            for k in range(rng.randint(0, 12))
        ]
        new_front, added, removed = update_front(front, batch)
        points.extend(batch)
        expected = pareto_front(points)
        assert ids(new_front) == ids(expected), step
        old_ids, new_ids = set(ids(front)), set(ids(new_front))
        assert set(added) == new_ids - old_ids
        assert set(removed) == old_ids - new_ids
        assert set(added) <= {p[0] for p in batch}
        front = new_front


def test_update_front_keeps_existing_on_exact_tie():
    front = pareto_front([(1, 5.0, 0.5)])
    new_front, added, removed = update_front(front, [(2, 5.0, 0.5)])
    assert ids(new_front) == [1] and added == [] and removed == []



def test_front_delta_names_the_points_that_joined_and_left():
    old = [(1, 1.0, 0.5), (2, 2.0, 0.7)]
    new = [(3, 1.5, 0.6), (2, 2.0, 0.7), (4, 3.0, 0.8)]
    assert front_delta(old, new) == ([3, 4], [1])
    assert front_delta(new, new) == ([], [])


def test_front_of_sorted_rows_matches_pareto_front():
    """The database hands the rows sorted (latency, accuracy desc, id): one pass gives the front."""
    rng = random.Random(3)
    for trial in range(50):
        points = [(i, rng.choice([1.0, 2.0, 3.0, rng.uniform(0, 5)]), rng.choice([0.5, 0.9, rng.random()]))
                  for i in range(rng.randrange(1, 200))]
        ordered = sorted(points, key=lambda p: (p[1], -p[2], p[0]))
        assert ids(front_of_sorted(ordered)) == ids(pareto_front(points)) == ids(brute_force(points))
