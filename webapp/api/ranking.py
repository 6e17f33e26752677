"""Checking a run's ranking: architectures spread across its samples retrained from scratch
(search_core/ranking.py chooses them), their standalone test accuracy against the shared-weight
accuracy the search ranked them by: create, list, download as CSV."""
from __future__ import annotations

import csv
import io

import sqlalchemy as sa
from flask import Response, current_app, jsonify

from nano_agent.limits import Limit
from search_core.ranking import MIN_ARCHITECTURES, spread
from search_core.recipe import Recipe

from ..extensions import db
from ..models import RankingCheck, Run, Sample, Training
from ..serialize import ranking_check_dict, sample_numbers

from .errors import ApiError, bp, get_row, get_run, json_body
from .validation import integer_error

CHECK_LIMITS = {"architectures": Limit(MIN_ARCHITECTURES, 30), "epochs": Limit(1, 10000),
                "seed": Limit(0, 2 ** 31 - 1)}
# 8 retrainings of the recipe's 60 epochs: 5 to 9 min on digits on 2 cores, at the 35 to 63 s
# per retraining the README's tour measured (not timed as a check)
ARCHITECTURES = 8


def validate_check(run: Run, body: dict) -> dict:
    """How many architectures, epochs and which seed (defaults: ARCHITECTURES, the recipe's
    epochs, the run's seed), or ApiError(400) per field."""
    errors = {name: "unknown field" for name in sorted(set(body) - set(CHECK_LIMITS))}
    values = {}
    defaults = {"architectures": ARCHITECTURES, "epochs": Recipe.epochs,
                "seed": (run.config_data or {}).get("seed", 0)}
    for name, limit in CHECK_LIMITS.items():
        values[name] = body.get(name, defaults[name])
        if message := integer_error(values[name], limit):
            errors[name] = message
    if errors:
        raise ApiError(400, errors=errors)
    return values


@bp.get("/runs/<id:run_id>/ranking_checks")
def list_checks(run_id):
    return jsonify([ranking_check_dict(check) for check in get_run(run_id).ranking_checks])


@bp.post("/runs/<id:run_id>/ranking_checks")
def create_check(run_id):
    """Retrain architectures spread across the run's samples (its pick among them), each a
    retraining through the queue."""
    run = get_run(run_id)
    if run.status != "finished" or not run.run_dir:
        raise ApiError(409, "run {} is {}: check the ranking of a finished run".format(
            run_id, run.status))
    values = validate_check(run, json_body(optional=True))
    samples = db.session.scalars(sa.select(Sample).where(Sample.run_id == run.id)
                                 .order_by(Sample.id)).all()
    by_hash = {s.arch_hash: s for s in samples}
    chosen = spread([{"arch_hash": s.arch_hash, "accuracy": s.accuracy} for s in samples],
                    values["architectures"], run.best_sample.arch_hash if run.best_sample else None)
    if len(chosen) < MIN_ARCHITECTURES:
        raise ApiError(409, "run {} evaluated {} distinct architectures: a ranking needs {}".format(
            run_id, len(chosen), MIN_ARCHITECTURES))
    check = RankingCheck(run_id=run.id, **values)
    numbers = sample_numbers(run.id)
    db.session.add(check)
    db.session.flush()
    for choice in chosen:
        sample = by_hash[choice["arch_hash"]]
        training = Training(run_id=run.id, sample_id=sample.id, arch_hash=sample.arch_hash,
                            arch_json=sample.arch_json, label="sample #{}".format(
                                numbers[sample.id]), epochs=check.epochs, seed=check.seed,
                            ranking_check_id=check.id)
        db.session.add(training)
        db.session.flush()
        current_app.extensions["workers"].submit(training)
    return jsonify(ranking_check_dict(check)), 201


@bp.get("/ranking_checks/<id:check_id>.csv")
def check_csv(check_id):
    check = get_row(RankingCheck, check_id, "ranking check")
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ("number", "arch_hash", "shared_weight_accuracy", "test_accuracy", "latency_ms",
               "pick", "status", "train_time_s")
    writer.writerow(columns)
    for point in ranking_check_dict(check)["points"]:
        writer.writerow([point[name] for name in columns])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=run{}_ranking_check{}.csv".format(
            check.run_id, check.id)})
