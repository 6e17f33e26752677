"""A run's samples (a page at a time), metrics, Pareto front and downloads."""
from __future__ import annotations

import csv
import io
import json

import sqlalchemy as sa
from flask import Response, jsonify, request

from ..extensions import db
from ..ids import MAX_ID
from ..models import EpochMetric, Sample, stored_front
from ..serialize import SAMPLE_FIELDS, metric_dict, sample_dict, sample_number, sample_numbers

from .errors import ApiError, bp, get_run


# samples in one answer at most: a request's memory and time stay bounded however large the run
# (200,000 samples in one answer took 23 s and 1 GB of the server's memory)
SAMPLES_PAGE = 5000


def _samples(run_id, after=None, limit=None):
    query = sa.select(Sample).where(Sample.run_id == run_id)
    if after is not None:
        query = query.where(Sample.id > after)
    return db.session.scalars(query.order_by(Sample.id).limit(limit)).all()


def _count_arg(name, default, largest):
    """A query argument that is a count from 0 to ``largest`` (``default`` when absent)."""
    value = request.args.get(name)
    if value is None:
        return default
    count = int(value) if value.isdigit() and len(value) < 20 else None
    if count is None or count > largest:
        raise ApiError(400, errors={name: "must be an integer from 0 to {}".format(largest)})
    return count


@bp.get("/runs/<id:run_id>/samples")
def list_samples(run_id):
    """The run's samples in the order it made them, a page at a time: those after the sample id
    ``after``, at most ``limit`` (SAMPLES_PAGE, the default, at most). A page shorter than its
    limit is the last."""
    get_run(run_id)
    after = _count_arg("after", None, MAX_ID)
    limit = _count_arg("limit", SAMPLES_PAGE, SAMPLES_PAGE)
    page = _samples(run_id, after, limit) if limit else []
    # numbers run on from the page's first: one count, not every id of the run
    first = sample_number(page[0]) if page else 0
    return jsonify([sample_dict(s, first + i) for i, s in enumerate(page)])


@bp.get("/runs/<id:run_id>/metrics")
def list_metrics(run_id):
    get_run(run_id)
    metrics = db.session.scalars(sa.select(EpochMetric).where(EpochMetric.run_id == run_id)
                                 .order_by(EpochMetric.epoch)).all()
    return jsonify([metric_dict(m) for m in metrics])


@bp.get("/runs/<id:run_id>/pareto")
def pareto(run_id):
    get_run(run_id)
    ids = [point[0] for point in stored_front(run_id)]  # only the front's rows are loaded whole
    rows = {s.id: s for s in db.session.scalars(sa.select(Sample).where(Sample.id.in_(ids)))} if ids else {}
    numbers = sample_numbers(run_id)
    return jsonify([sample_dict(rows[i], numbers[i]) for i in ids])


def _arch_download(arch: dict, filename: str) -> Response:
    body = json.dumps(arch, indent=2, sort_keys=True) + "\n"
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": "attachment; filename={}".format(filename)})


@bp.get("/runs/<id:run_id>/best.json")
def best_json(run_id):
    run = get_run(run_id)
    if run.best_sample is None:
        raise ApiError(404, "run {} has no best architecture yet".format(run_id))
    return _arch_download(run.best_sample.arch, "best_arch_{}.json".format(run_id))


@bp.get("/runs/<id:run_id>/samples/<id:sample_id>/arch.json")
def sample_arch(run_id, sample_id):
    get_run(run_id)
    sample = db.session.get(Sample, sample_id)
    if sample is None or sample.run_id != run_id:
        raise ApiError(404, "run {} has no sample {}".format(run_id, sample_id))
    return _arch_download(sample.arch, "arch_{}_{}.json".format(run_id, sample.arch_hash[:12]))


@bp.get("/runs/<id:run_id>/samples.csv")
def samples_csv(run_id):
    get_run(run_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(SAMPLE_FIELDS + ("ops",))
    for sample in _samples(run_id):
        writer.writerow([getattr(sample, name) for name in SAMPLE_FIELDS]
                        + [" ".join(sample.ops_data or [])])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=samples_{}.csv".format(run_id)})
