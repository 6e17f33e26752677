"""The API's blueprint and its errors: JSON for every failure (an ApiError, 404, 405, and a bug's
500, whose traceback goes to the server's log), and the lookups every resource raises them from."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import HTTPException

from ..extensions import db
from ..models import Device, Run

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")


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


@bp.errorhandler(Exception)
def _internal_error(e):
    """A bug must still answer in JSON; its traceback goes to the log, not to the client."""
    if isinstance(e, HTTPException):  # not a bug: keep its status
        return jsonify(error=e.description), e.code
    db.session.rollback()
    log.exception("%s %s failed", request.method, request.path)
    return jsonify(error="internal error: {} (the server's log has the details)".format(
        type(e).__name__)), 500


def get_row(model, row_id, name: str):
    """The ``model`` row ``row_id``, or a 404 naming it (``name``: what the user calls it)."""
    row = db.session.get(model, row_id)
    if row is None:
        raise ApiError(404, "no {} {}".format(name, row_id))
    return row


def get_run(run_id) -> Run:
    return get_row(Run, run_id, "run")


def get_device(device_id) -> Device:
    return get_row(Device, device_id, "device")


def json_body(optional=False) -> dict:
    """The request's JSON object; with ``optional`` an empty body counts as ``{}``."""
    if optional and not request.get_data():
        return {}
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, errors={"body": "expected a JSON object"})
    return body
