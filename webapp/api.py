"""JSON API under /api: runs, their samples, Pareto front and downloads.

Errors are JSON: 400 ``{"errors": {field: message}}`` for bad input, 404 / 409 ``{"error": ...}``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import typing
from dataclasses import fields

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify, request

from search_core.search import ConfigError, SearchConfig

from . import db
from .models import Run, Sample
from .pareto import pareto_front
from .runner import CHECKPOINT

bp = Blueprint("api", __name__, url_prefix="/api")

RESUMABLE = ("failed", "cancelled", "interrupted")
SAMPLE_FIELDS = ("id", "epoch", "kind", "arch_hash", "accuracy", "latency_ms", "latency_mean_ms",
                 "latency_std_ms", "latency_p90_ms", "latency_min_ms", "predicted_latency_ms",
                 "memory_mb", "params", "macs", "objective", "feasible")
_FIELD_TYPES = {f.name: f.type for f in fields(SearchConfig)}


class ApiError(Exception):
    def __init__(self, status, error=None, errors=None):
        super().__init__(error)
        self.status, self.error, self.errors = status, error, errors


@bp.errorhandler(ApiError)
def _api_error(e):
    body = {"errors": e.errors} if e.errors else {"error": e.error}
    return jsonify(body), e.status


@bp.errorhandler(404)
def _not_found(e):
    return jsonify(error="not found"), 404


@bp.errorhandler(405)
def _method_not_allowed(e):
    return jsonify(error="method not allowed"), 405


def _iso(value):
    return value.isoformat() if value is not None else None


def get_run(run_id) -> Run:
    run = db.session.get(Run, run_id)
    if run is None:
        raise ApiError(404, "no run {}".format(run_id))
    return run


def sample_dict(sample: Sample) -> dict:
    d = {name: getattr(sample, name) for name in SAMPLE_FIELDS}
    d["created_at"] = _iso(sample.created_at)
    return d


def run_dict(run: Run, full=False) -> dict:
    best = run.best_sample
    d = {
        "id": run.id, "name": run.name, "status": run.status, "epoch": run.epoch,
        "epochs": run.epochs, "phase": run.phase,
        "device": run.device.name if run.device is not None else (run.config_data or {}).get("device"),
        "created_at": _iso(run.created_at), "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at), "error": run.error,
        "best": None if best is None else {
            "id": best.id, "arch_hash": best.arch_hash, "accuracy": best.accuracy,
            "latency_ms": best.latency_ms, "objective": best.objective},
    }
    if full:
        d.update(config=run.config_data, run_dir=run.run_dir,
                 resumable=_resumable(run), samples=_count_samples(run.id))
    return d


def _count_samples(run_id):
    return db.session.scalar(sa.select(sa.func.count(Sample.id)).where(Sample.run_id == run_id))


def _resumable(run: Run) -> bool:
    return (run.status in RESUMABLE and bool(run.run_dir)
            and os.path.exists(os.path.join(run.run_dir, CHECKPOINT))
            and os.path.exists(os.path.join(run.run_dir, "config.json")))


# --- validation ----------------------------------------------------------------------------------

def _type_error(name, value):
    """A message if ``value`` has the wrong JSON type for the setting ``name``, else None."""
    hint = _FIELD_TYPES[name]
    hint = hint if isinstance(hint, str) else getattr(hint, "__name__", str(hint))
    optional = "Optional" in hint or typing.get_origin(_FIELD_TYPES[name]) is typing.Union
    if value is None:
        return None if optional else "must not be null"
    if "bool" in hint:
        return None if isinstance(value, bool) else "must be true or false"
    if "int" in hint:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "must be an integer"
    if "float" in hint:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if "str" in hint:
        return None if isinstance(value, str) else "must be a string"
    return None


def validate_settings(body) -> tuple[str, dict]:
    """``(name, full config dict)`` of a new-run request, or ApiError(400)."""
    if not isinstance(body, dict):
        raise ApiError(400, errors={"body": "expected a JSON object"})
    errors = {}
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "a name is required"
    elif len(name) > 255:
        errors["name"] = "at most 255 characters"
    settings = {k: v for k, v in body.items() if k != "name"}
    for key, value in settings.items():
        if key not in _FIELD_TYPES:
            errors[key] = "unknown setting"
        else:
            message = _type_error(key, value)
            if message:
                errors[key] = message
    if "device" in settings and settings["device"] != "local" and "device" not in errors:
        errors["device"] = "only 'local' is supported for now"
    if errors:
        raise ApiError(400, errors=errors)
    try:
        config = SearchConfig(**settings).validate()
    except ConfigError as e:
        raise ApiError(400, errors={e.field or "config": str(e)}) from None
    return name.strip(), config.to_dict()


# --- runs ----------------------------------------------------------------------------------------

@bp.get("/runs")
def list_runs():
    runs = db.session.scalars(sa.select(Run).order_by(Run.created_at.desc(), Run.id.desc())).all()
    return jsonify([run_dict(run) for run in runs])


@bp.post("/runs")
def create_run():
    name, config = validate_settings(request.get_json(silent=True))
    run = Run(name=name, status="queued")
    run.config_data = config
    db.session.add(run)
    db.session.flush()
    run.run_dir = os.path.join(current_app.config["DATA_DIR"], "runs", str(run.id))
    db.session.commit()
    try:
        current_app.extensions["runs"].start(run)
    except OSError as e:
        run.status, run.error = "failed", "could not start the worker: {}".format(e)
        db.session.commit()
    return jsonify(run_dict(run, full=True)), 201


@bp.get("/runs/<int:run_id>")
def show_run(run_id):
    return jsonify(run_dict(get_run(run_id), full=True))


@bp.post("/runs/<int:run_id>/cancel")
def cancel_run(run_id):
    run = get_run(run_id)
    if not run.active:
        raise ApiError(409, "run {} is {}, not running".format(run_id, run.status))
    current_app.extensions["runs"].cancel(run_id)
    db.session.expire_all()
    return jsonify(run_dict(get_run(run_id), full=True))


@bp.post("/runs/<int:run_id>/resume")
def resume_run(run_id):
    run = get_run(run_id)
    if not _resumable(run):
        raise ApiError(409, "run {} is {}{}: it cannot be resumed".format(
            run_id, run.status, "" if run.status not in RESUMABLE else " without a checkpoint"))
    current_app.extensions["runs"].resume(run)
    return jsonify(run_dict(run, full=True))


# --- samples, front, downloads -------------------------------------------------------------------

def _samples(run_id, after=None):
    query = sa.select(Sample).where(Sample.run_id == run_id)
    if after is not None:
        query = query.where(Sample.id > after)
    return db.session.scalars(query.order_by(Sample.id)).all()


@bp.get("/runs/<int:run_id>/samples")
def list_samples(run_id):
    get_run(run_id)
    after = request.args.get("after")
    if after is not None:
        try:
            after = int(after)
        except ValueError:
            raise ApiError(400, errors={"after": "must be a sample id (an integer)"}) from None
    return jsonify([sample_dict(s) for s in _samples(run_id, after)])


@bp.get("/runs/<int:run_id>/pareto")
def pareto(run_id):
    get_run(run_id)
    return jsonify([sample_dict(s) for s in pareto_front(_samples(run_id))])


@bp.get("/runs/<int:run_id>/best.json")
def best_json(run_id):
    run = get_run(run_id)
    if run.best_sample is None:
        raise ApiError(404, "run {} has no best architecture yet".format(run_id))
    body = json.dumps(run.best_sample.arch, indent=2, sort_keys=True) + "\n"
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": "attachment; filename=best_arch_{}.json".format(run_id)})


@bp.get("/runs/<int:run_id>/samples.csv")
def samples_csv(run_id):
    get_run(run_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(SAMPLE_FIELDS)
    for sample in _samples(run_id):
        writer.writerow([getattr(sample, name) for name in SAMPLE_FIELDS])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=samples_{}.csv".format(run_id)})
