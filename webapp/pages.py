"""The dashboard's HTML pages. They are thin: the browser fetches every figure from the JSON API
(/api) and follows live runs over Socket.IO (webapp/static/js/)."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from nano_agent.protocol import DEFAULT_PORT
from nano_agent.space import ALL_OPS, STAGES
from search_core.settings import form_sections

from .extensions import db
from .models import RUN_ACTIVE_STATUSES, Run

bp = Blueprint("pages", __name__)


@bp.app_context_processor
def server_facts():
    """What the pages' scripts know of the server, declared once here (common.js reads it): the
    statuses of a run or a retraining that is not over, the space's ops in order, its stages."""
    return {"server_facts": {"active": list(RUN_ACTIVE_STATUSES),
                             "ops": [op.name for op in ALL_OPS],
                             "stage_blocks": [blocks for _, blocks, _ in STAGES]}}


@bp.get("/")
def runs():
    return render_template("runs.html", page="runs")


@bp.get("/runs/new")
def new_run():
    return render_template("new_run.html", page="new", sections=form_sections())


@bp.get("/runs/<id:run_id>")
def run(run_id):
    run = db.session.get(Run, run_id)
    if run is None:
        return render_template("404.html", page="runs",
                               message="There is no run {}.".format(run_id)), 404
    return render_template("run.html", page="runs", run=run)


@bp.get("/devices")
def devices():
    return render_template("devices.html", page="devices", default_port=DEFAULT_PORT)


def _run_ids(text):
    """``"1,2, 3,x,2"`` -> ``[1, 2, 3]``: positive integers, in order, without repeats."""
    ids = []
    for part in (text or "").replace(" ", ",").split(","):
        if part.strip().isdigit():
            value = int(part)
            if value > 0 and value not in ids:
                ids.append(value)
    return ids


@bp.get("/compare")
def compare():
    return render_template("compare.html", page="compare", run_ids=_run_ids(request.args.get("runs")))
