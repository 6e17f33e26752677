"""Pareto front of (accuracy up, latency down). Pure Python, no Flask.

A point is a tuple ``(id, latency_ms, accuracy)``, a mapping with those keys, or an object with
those attributes (e.g. a ``Sample`` row). Points missing a latency or an accuracy (None / NaN)
are ignored. The front is returned in latency order (ascending), accuracy strictly increasing;
of exactly equal points the one seen first is kept.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from operator import itemgetter

__all__ = ["pareto_front", "update_front", "front_delta", "point_values"]


def point_values(point):
    """``(id, latency_ms, accuracy)`` of a point."""
    if isinstance(point, tuple):
        return point[0], point[1], point[2]
    if isinstance(point, Mapping):
        return point["id"], point["latency_ms"], point["accuracy"]
    return point.id, point.latency_ms, point.accuracy


def _values(points: list):
    """Latencies and accuracies of ``points`` as floats (None where missing or NaN)."""
    try:
        if all(type(p) is tuple for p in points):
            lats = [float(p[1]) for p in points]
            accs = [float(p[2]) for p in points]
        else:
            raise TypeError
    except TypeError:  # other point types, or None values
        lats, accs = [], []
        for point in points:
            _, latency, accuracy = point_values(point)
            lats.append(None if latency is None else float(latency))
            accs.append(None if accuracy is None else float(accuracy))
    return lats, accs


def _keyed(points: list):
    """[(latency, -accuracy, seq, point)] of the valid points, in input order."""
    lats, accs = _values(points)
    return [
        (lat, -acc, seq, point)
        for seq, (lat, acc, point) in enumerate(zip(lats, accs, points))
        if lat is not None and acc is not None and lat == lat and acc == acc  # x != x: NaN
    ]


def _sweep(keyed_sorted):
    front = []
    best = -math.inf
    for _, neg_accuracy, _, point in keyed_sorted:
        if -neg_accuracy > best:
            best = -neg_accuracy
            front.append(point)
    return front


def pareto_front(points: Iterable) -> list:
    """The non-dominated points, latency ascending. O(n log n)."""
    points = list(points)
    lats, accs = _values(points)
    valid = [
        i for i, (lat, acc) in enumerate(zip(lats, accs))
        if lat is not None and acc is not None and lat == lat and acc == acc  # x != x: NaN
    ]
    # One C-keyed sort by latency (stable: ties stay in input order); ties are settled in the sweep,
    # where a later point of the same latency with a higher accuracy replaces the front's last one.
    valid.sort(key=lats.__getitem__)
    front = []
    best = -math.inf
    last_latency = None
    for i in valid:
        acc = accs[i]
        if acc > best:
            lat = lats[i]
            if lat == last_latency:
                front.pop()
            front.append(points[i])
            best = acc
            last_latency = lat
    return front


def front_of_sorted(rows: Iterable) -> list:
    """The front of ``(id, latency, accuracy)`` rows already sorted by latency ascending, then
    accuracy descending, then id (e.g. by the database, from an index): one pass, same result as
    ``pareto_front``, as a list of the rows on it."""
    front = []
    best = -math.inf
    for row in rows:
        accuracy = row[2]
        if accuracy is not None and accuracy > best:
            best = accuracy
            front.append(tuple(row))
    return front


def update_front(front: list, new_points: Iterable):
    """Merge ``new_points`` into ``front`` (a result of ``pareto_front``).

    Returns ``(new_front, added_ids, removed_ids)``: the ids of new points now on the front, and of
    old front points no longer on it. Same result as ``pareto_front(front + new_points)``, in
    O(f + k log k) for a front of f points and k new ones.
    """
    old = _keyed(list(front))  # already sorted: a front is in latency order, accuracy increasing
    new = _keyed(list(new_points))
    offset = len(old)
    new = [(lat, nacc, offset + seq, p) for lat, nacc, seq, p in new]  # old points win exact ties
    new.sort(key=itemgetter(0, 1, 2))
    merged = heapq.merge(old, new, key=itemgetter(0, 1, 2))
    new_front = _sweep(merged)
    return (new_front, *front_delta(front, new_front))


def front_delta(old_front: list, new_front: list):
    """``(added_ids, removed_ids)``: the points of ``new_front`` not on ``old_front``, and the
    points of ``old_front`` no longer on ``new_front``."""
    old_ids = [point_values(p)[0] for p in old_front]
    new_ids = [point_values(p)[0] for p in new_front]
    old_set = set(old_ids)
    new_set = set(new_ids)
    return [i for i in new_ids if i not in old_set], [i for i in old_ids if i not in new_set]
