"""JSON API under /api: runs, their samples, metrics, Pareto front and downloads; devices.

Errors are JSON: 400 ``{"errors": {field: message}}`` for bad input, 404 / 409 ``{"error": ...}``,
500 ``{"error": ...}`` (the traceback goes to the server's log).
"""
from __future__ import annotations

import csv
import io
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import unicodedata

import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from flask import Blueprint, Response, current_app, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from nano_agent import limits
from nano_agent.protocol import DEFAULT_PORT
from nano_agent.space import SearchSpace
from search_core.config import CHOICES, Recipe, SearchConfig, is_text, limits_dict, setting_errors
from search_core.rundir import RunDirectory

from .config import SERVER_SETTINGS
from .devices import DeviceError
from .extensions import db
from .ids import MAX_ID, is_id
from .models import (RUN_ACTIVE_STATUSES, TRAINING_FILES, Device, DeviceGroup, DeviceLut,
                     EpochMetric, Run, Sample, Training, stored_front)
from .serialize import (RESUMABLE, SAMPLE_FIELDS, dataset_roots, group_dict, metric_dict,
                        public_path, resumable, run_dict, sample_dict, sample_number,
                        sample_numbers, training_dict, under)

log = logging.getLogger(__name__)
MAX_GROUP_SIZE = 256  # devices in one pool: a lab's rack, not the 100,000 ids a probe sent

bp = Blueprint("api", __name__, url_prefix="/api")

# what a device profile may set: the space's setting, with the run form's defaults
PROFILE_LIMITS = {"resolution": (int, limits.RESOLUTION), "width_mult": (float, limits.WIDTH_MULT),
                  "num_classes": (int, limits.NUM_CLASSES), "in_channels": (int, limits.IN_CHANNELS)}
PROFILE_DEFAULTS = {"resolution": SearchConfig.resolution, "width_mult": SearchConfig.width_mult,
                    "num_classes": 10, "in_channels": 1}


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


def get_run(run_id) -> Run:
    run = db.session.get(Run, run_id)
    if run is None:
        raise ApiError(404, "no run {}".format(run_id))
    return run


def get_device(device_id) -> Device:
    device = db.session.get(Device, device_id)
    if device is None:
        raise ApiError(404, "no device {}".format(device_id))
    return device


def _json_body(optional=False) -> dict:
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


# --- validation ----------------------------------------------------------------------------------

def _text_error(value, required, limit=255):
    """What is wrong with a required text field, or None (``required`` says what is missing)."""
    if not isinstance(value, str) or not value.strip():
        return required
    if len(value.strip()) > limit:
        return "at most {} characters".format(limit)
    return None if is_text(value) else "must be text without control characters"


def _name_error(name, limit=255):
    """What is wrong with a name, or None: besides `_text_error`'s checks, no Unicode format
    characters (a zero-width space or a right-to-left override made names look like others)."""
    message = _text_error(name, "a name is required", limit)
    if message is None and any(unicodedata.category(c) == "Cf" for c in name):
        message = "must not contain invisible or direction-changing characters"
    return message


def clean_name(name: str) -> str:
    """A name as it is stored and compared: NFKC-normalised (full-width and other compatibility
    forms folded into the plain ones, so that 'ｌｏｃａｌ' is 'local'), without outer spaces."""
    return unicodedata.normalize("NFKC", name).strip()


def _new_name_error(name, limit, column, kind):
    """Why ``name`` cannot name a new ``kind`` whose names are ``column``: missing, too long, or
    taken; None if it can."""
    message = _name_error(name, limit)
    if message is None and db.session.scalar(
            sa.select(column).where(column == clean_name(name))) is not None:
        message = "a {} with this name exists".format(kind)
    return message


# a name's label; "_" too, which names in /etc/hosts and of mDNS may hold
DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _host_error(host: str):
    """None if ``host`` is an IP address or a DNS name that can resolve (labels of 1 to 63 letters,
    digits, hyphens or underscores, 253 characters in all, an internationalised name in its ASCII
    form), else why not."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        ascii_name = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return "not a host name or IP address (each part of a name has at most 63 letters)"
    if len(ascii_name) > 253 or not all(DNS_LABEL.match(label) for label in ascii_name.split(".")):
        return "not a host name or IP address"
    return None


def default_run_name(config: dict) -> str:
    """The name of a run asked for without one: what it searches, e.g. 'digits, 2.5 ms'."""
    target, memory = config.get("target_latency_ms"), config.get("target_memory_mb")
    parts = [config["dataset"], "{:g} ms".format(target) if target else "automatic T"]
    return ", ".join(parts + (["{:g} MB".format(memory)] if memory else []))


def validate_settings(body: dict) -> tuple[str, int | None, int | None, dict]:
    """``(name, device_id, group_id, full config dict)`` of a new-run request, or ApiError(400)
    naming every field that is wrong (search_core.config checks each setting by its declared type
    and limit). A run without a name (missing, null or blank) is named after its settings."""
    errors = {}
    name = body.get("name")
    if isinstance(name, str) and not name.strip():
        name = None
    message = None if name is None else _name_error(name)
    if message:
        errors["name"] = message
    device_id, group_id = body.get("device_id"), body.get("group_id")
    if device_id is not None and not is_id(device_id):
        errors["device_id"] = "must be the id of a registered device"
    if group_id is not None and not is_id(group_id):
        errors["group_id"] = "must be the id of a device group"
    elif group_id is not None and device_id is not None:
        errors["group_id"] = "a run measures on a device or on a group: give one of them"
    given = {k: v for k, v in body.items() if k not in ("name", "device_id", "group_id")}
    settings = dict(current_app.config["RUN_DEFAULTS"], **given)
    for key in SERVER_SETTINGS:
        if key in settings:
            errors[key] = "set by the dashboard: choose the device with device_id"
            del settings[key]
    errors.update(setting_errors(settings))
    if not errors.get("data_dir") and settings.get("data_dir") is not None:
        settings["data_dir"], message = _dataset_directory(settings["data_dir"])
        if message:
            errors["data_dir"] = message
    if errors:
        raise ApiError(400, errors=errors)
    config = SearchConfig(**settings).to_dict()
    return clean_name(name) if name else default_run_name(config), device_id, group_id, config


def _dataset_directory(name: str):
    """``(absolute path, None)`` of a directory under a dataset root, or ``(None, why not)``: the
    same answer for a path outside the roots as for a missing one, so that nothing about the
    rest of the server's disk shows."""
    roots = dataset_roots()
    candidates = [name] if os.path.isabs(name) else [os.path.join(root, name) for root in roots]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if any(under(real, root) for root in roots) and os.path.isdir(real):
            return real, None
    return None, "no such directory under the dataset roots (a path relative to {})".format(
        " or ".join(public_path(root, []) + "/" for root in roots))


def _run_device(device_id) -> Device:
    """The device of a new run: the one asked for, else the built-in local device."""
    if device_id is None:
        device = db.session.scalars(sa.select(Device).where(Device.kind == "local")).first()
        if device is None:
            raise ApiError(400, errors={"device_id": "no local device: choose a registered device"})
        return device
    device = db.session.get(Device, device_id)
    if device is None:
        raise ApiError(400, errors={"device_id": "no device {}".format(device_id)})
    return device


def _device_address(device: Device) -> str:
    try:
        return current_app.extensions["devices"].address(device)
    except DeviceError as e:
        raise ApiError(409, "device {} cannot be used: {}".format(device.name, e)) from None


def _run_group(group_id) -> DeviceGroup:
    group = db.session.get(DeviceGroup, group_id)
    if group is None or not group.devices:
        raise ApiError(400, errors={"group_id": "no device group {} with devices".format(group_id)})
    return group


# --- runs ----------------------------------------------------------------------------------------

@bp.get("/defaults")
def defaults():
    """The forms' defaults, choices and limits (the device side's table, nano_agent/limits.py)."""
    return jsonify(settings=SearchConfig(**current_app.config["RUN_DEFAULTS"]).to_dict(),
                   datasets=list(CHOICES["dataset"]), strategies=list(CHOICES["strategy"]), constraints=list(CHOICES["constraint"]),
                   backends=list(CHOICES["backend"]),
                   limits=limits_dict(),
                   profile={"defaults": PROFILE_DEFAULTS,
                            "limits": {k: {"min": lim.low, "max": lim.high}
                                       for k, (_, lim) in PROFILE_LIMITS.items()}},
                   device_limits=limits.as_dict(), max_id=MAX_ID)


@bp.get("/runs")
def list_runs():
    runs = db.session.scalars(sa.select(Run).options(selectinload(Run.best_sample), selectinload(Run.device))
                              .order_by(Run.created_at.desc(), Run.id.desc())).all()
    return jsonify([run_dict(run) for run in runs])


@bp.post("/runs")
def create_run():
    name, device_id, group_id, config = validate_settings(_json_body())
    group = _run_group(group_id) if group_id is not None else None
    if group is not None:  # a pool: its members' addresses, one identity (search_core/pool.py)
        device = group.devices[0]  # the member that keeps the group's lookup tables
        config["device"] = ",".join(_device_address(d) for d in group.devices)
        config["device_group"] = group.name
    else:
        device = _run_device(device_id)
        config["device"] = _device_address(device)
    if config["threads"] is None:
        # whatever device measures, the worker trains here: leave the local agent its cores, and
        # share the rest between the runs that may run at once (torch processes on the same
        # cores slow each other down)
        agent = current_app.config["LOCAL_AGENT_THREADS"] if current_app.config["LOCAL_AGENT"] else 0
        spare = (os.cpu_count() or 1) - agent
        config["threads"] = max(1, spare // current_app.config["MAX_RUNS"])
    run = Run(name=name, status="queued", device_id=device.id,
              group_id=group.id if group is not None else None)
    run.config_data = config
    db.session.add(run)
    db.session.flush()
    run.run_dir = _new_run_dir(run.id)
    current_app.extensions["runs"].submit(run)
    return jsonify(run_dict(run, full=True)), 201


def _new_run_dir(run_id: int) -> str:
    """A directory that no run has used, made now: runs/<id>, else runs/<id>-2, -3, ... SQLite
    may give a deleted run's id to a new run (after a lost WAL it did), and a new run in a
    directory that held another's checkpoint resumed that run instead of starting."""
    root = os.path.join(current_app.config["DATA_DIR"], "runs")
    os.makedirs(root, exist_ok=True)
    for n in itertools.count(1):
        path = os.path.join(root, str(run_id) if n == 1 else "{}-{}".format(run_id, n))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


@bp.get("/runs/<id:run_id>")
def show_run(run_id):
    return jsonify(run_dict(get_run(run_id), full=True))


@bp.delete("/runs/<id:run_id>")
def delete_run(run_id):
    run = get_run(run_id)
    if run.status == "running" or current_app.extensions["runs"].is_alive(run_id):
        raise ApiError(409, "run {} is {}: cancel it first".format(run_id, run.status))
    if any(t.active for t in run.trainings):
        raise ApiError(409, "run {} has a retraining in progress: cancel it first".format(run_id))
    run_dir = run.run_dir
    db.session.delete(run)
    db.session.commit()
    runs_root = os.path.join(current_app.config["DATA_DIR"], "runs")
    if run_dir and os.path.dirname(os.path.abspath(run_dir)) == os.path.abspath(runs_root):
        shutil.rmtree(run_dir, ignore_errors=True)  # only a directory the dashboard made
    current_app.extensions["publisher"].forget(run_id)
    current_app.extensions["runs"].kick()  # the runs queued behind it move up
    return "", 204


@bp.post("/runs/<id:run_id>/cancel")
def cancel_run(run_id):
    run = get_run(run_id)
    if not run.active:
        raise ApiError(409, "run {} is {}, not running".format(run_id, run.status))
    current_app.extensions["runs"].cancel(run_id)
    db.session.expire_all()
    return jsonify(run_dict(get_run(run_id), full=True))


@bp.post("/runs/<id:run_id>/resume")
def resume_run(run_id):
    run = get_run(run_id)
    if not resumable(run):
        raise ApiError(409, "run {} is {}{}: it cannot be resumed".format(
            run_id, run.status, "" if run.status not in RESUMABLE else " without a checkpoint"))
    current_app.extensions["runs"].wait(run_id, 10)  # a worker that just failed is still exiting
    holder = RunDirectory(run.run_dir).worker_pid()
    if holder is not None:  # e.g. an orphan that did not stop: never two writers
        raise ApiError(409, "a worker (pid {}) still runs on run {}: stop it first".format(
            holder, run_id))
    for device in run.measuring_devices:
        _device_address(device)  # refuse now what would fail in the queue
    current_app.extensions["runs"].submit(run)  # resumed on its device's address at its turn
    return jsonify(run_dict(run, full=True))


# --- samples, metrics, front, downloads ----------------------------------------------------------

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


# --- retraining -----------------------------------------------------------------------------------

TRAINING_LIMITS = {"epochs": limits.Limit(1, 10000), "seed": limits.Limit(0, 2 ** 31 - 1)}


def validate_training(run: Run, body: dict) -> dict:
    """What to retrain (``sample_id``, or ``reference``: true for MobileNetV2) and how (``epochs``
    default the recipe's, ``seed`` default the run's), or ApiError(400) per field."""
    errors, values = {}, {}
    for name, default in (("epochs", Recipe.epochs), ("seed", run.config_data.get("seed", 0))):
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value not in TRAINING_LIMITS[name]:
            errors[name] = "must be an integer in " + TRAINING_LIMITS[name].describe()
        values[name] = value
    unknown = sorted(set(body) - {"sample_id", "reference", "epochs", "seed"})
    for name in unknown:
        errors[name] = "unknown field"
    if body.get("reference") is True and "sample_id" not in body:
        reference = run.reference_data or {}
        if not isinstance(reference.get("arch"), dict):
            errors["reference"] = "this run has no reference architecture to retrain yet"
        values.update(sample=None, arch=reference.get("arch"), arch_hash=reference.get("arch_hash"),
                      label="MobileNetV2")
    elif is_id(body.get("sample_id")) and "reference" not in body:
        sample = db.session.get(Sample, body["sample_id"])
        if sample is None or sample.run_id != run.id:
            errors["sample_id"] = "run {} has no sample {}".format(run.id, body["sample_id"])
        else:
            values.update(sample=sample, arch=sample.arch, arch_hash=sample.arch_hash,
                          label="sample #{}".format(sample_number(sample)))
    else:
        errors["sample_id"] = 'give a sample of the run ("sample_id") or "reference": true'
    if errors:
        raise ApiError(400, errors=errors)
    return values


@bp.get("/runs/<id:run_id>/trainings")
def list_trainings(run_id):
    return jsonify([training_dict(t) for t in get_run(run_id).trainings])


@bp.post("/runs/<id:run_id>/trainings")
def create_training(run_id):
    """Retrain an architecture of the run from scratch on its data, in a worker of its own."""
    run = get_run(run_id)
    if not run.run_dir:
        raise ApiError(409, "run {} has no run directory".format(run_id))
    values = validate_training(run, _json_body())
    training = Training(run_id=run.id, sample_id=values["sample"].id if values["sample"] else None,
                        arch_hash=values["arch_hash"], label=values["label"], status="queued",
                        epochs=values["epochs"], seed=values["seed"])
    training.arch = values["arch"]
    db.session.add(training)
    db.session.commit()
    current_app.extensions["trainings"].start(training)
    return jsonify(training_dict(training)), 201


def get_training(training_id) -> Training:
    training = db.session.get(Training, training_id)
    if training is None:
        raise ApiError(404, "no training {}".format(training_id))
    return training


@bp.post("/trainings/<id:training_id>/cancel")
def cancel_training(training_id):
    training = get_training(training_id)
    if not training.active:
        raise ApiError(409, "training {} is {}, not running".format(training_id, training.status))
    current_app.extensions["trainings"].cancel(training_id)
    db.session.expire_all()
    return jsonify(training_dict(get_training(training_id)))


@bp.get("/trainings/<id:training_id>/<any({}):name>".format(
    ", ".join(repr(name) for name in TRAINING_FILES)))
def training_file(training_id, name):
    """The trained state_dict (load it with torch.load(..., weights_only=True)) or its ONNX."""
    training = get_training(training_id)
    path = os.path.join(training.directory or "", name)
    if training.status != "finished" or not os.path.isfile(path):
        raise ApiError(404, "training {} has no {} ({})".format(training_id, name, training.status))
    # one sample may be retrained several times: each training's files get names of their own
    stem = "{}_{}_training{}_{}epochs".format(training.label.replace("#", "").replace(" ", "_"),
                                             training.arch_hash[:12], training.id, training.epochs)
    return send_file(path, as_attachment=True, download_name="{}_{}".format(stem, name),
                     mimetype="application/octet-stream")


# --- devices -------------------------------------------------------------------------------------

def validate_device(body) -> dict:
    """The fields of a device registration, or ApiError(400) with a message per field."""
    errors = {}
    message = _new_name_error(body.get("name"), 128, Device.name, "device")
    if message:
        errors["name"] = message
    host = body.get("host")
    message = _text_error(host, "a host name or IP address is required")
    if message:
        errors["host"] = message
    else:
        message = _host_error(host.strip())
        if message:
            errors["host"] = message
    port = body.get("port", DEFAULT_PORT)
    if isinstance(port, str) and port.strip().isdigit() and len(port.strip()) <= 5:
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        errors["port"] = "must be an integer from 1 to 65535"
    token = body.get("token")
    message = _text_error(token, "the token the agent printed when it started is required")
    if message:
        errors["token"] = message
    unknown = sorted(set(body) - {"name", "host", "port", "token"})
    for key in unknown:
        errors[key] = "unknown field"
    if errors:
        raise ApiError(400, errors=errors)
    return {"name": clean_name(body["name"]), "host": host.strip(), "port": port,
            "token": token.strip()}


@bp.get("/devices")
def list_devices():
    registry = current_app.extensions["devices"]
    devices = db.session.scalars(sa.select(Device).order_by(Device.id)).all()
    return jsonify([registry.as_dict(d) for d in devices])


@bp.post("/devices")
def register_device():
    device = Device(kind="agent", status="unknown", **validate_device(_json_body()))
    db.session.add(device)
    db.session.commit()
    registry = current_app.extensions["devices"]
    registry.check(device)  # at once: the user sees online or offline, and why
    return jsonify(registry.as_dict(device)), 201


@bp.get("/devices/<id:device_id>")
def show_device(device_id):
    return jsonify(current_app.extensions["devices"].as_dict(get_device(device_id)))


@bp.post("/devices/<id:device_id>/check")
def check_device(device_id):
    device = get_device(device_id)
    registry = current_app.extensions["devices"]
    if device.kind == "local":
        try:
            registry.address(device)  # restarts the local agent if it died
        except DeviceError:
            pass  # reported on the device by the check below
    registry.check(device)
    return jsonify(registry.as_dict(device))


def validate_profile(body) -> dict:
    """The space setting and the backend of a profile request (defaults for what it leaves out), or
    ApiError(400)."""
    errors = {key: "unknown field" for key in sorted(set(body) - set(PROFILE_LIMITS) - {"backend"})}
    values = dict(PROFILE_DEFAULTS, backend=body.get("backend", CHOICES["backend"][0]))
    if values["backend"] not in CHOICES["backend"]:
        errors["backend"] = "must be one of " + ", ".join(CHOICES["backend"])
    for key, (kind, limit) in PROFILE_LIMITS.items():
        value = body.get(key, PROFILE_DEFAULTS[key])
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (kind is float or isinstance(value, int))
        if not number or value not in limit:
            errors[key] = "must be {} in {}".format(
                "an integer" if kind is int else "a number", limit.describe())
        values[key] = value
    if errors:
        raise ApiError(400, errors=errors)
    return values


@bp.post("/devices/<id:device_id>/profile")
def profile_device(device_id):
    """Profile the device's lookup table for one setting and calibrate it, as a run would; runs
    with that setting then reuse it."""
    device = get_device(device_id)
    values = validate_profile(_json_body(optional=True))
    registry = current_app.extensions["devices"]
    try:
        if device.kind == "local":
            registry.address(device)
        registry.start_profile(device, SearchSpace(values["width_mult"], values["resolution"],
                                                   values["num_classes"], values["in_channels"]),
                               values["backend"])
    except DeviceError as e:
        raise ApiError(409, str(e)) from None
    return jsonify(registry.as_dict(device)), 202


@bp.get("/devices/<id:device_id>/luts/<id:lut_id>.json")
def device_lut(device_id, lut_id):
    lut = db.session.get(DeviceLut, lut_id)
    if lut is None or lut.device_id != get_device(device_id).id:
        raise ApiError(404, "device {} has no lookup table {}".format(device_id, lut_id))
    return Response(lut.lut + "\n", mimetype="application/json", headers={
        "Content-Disposition": "attachment; filename=lut_{}_{}.json".format(device_id, lut_id)})


@bp.delete("/devices/<id:device_id>")
def delete_device(device_id):
    device = get_device(device_id)
    if device.kind == "local":
        raise ApiError(409, "the built-in local device cannot be removed")
    if db.session.scalar(sa.select(Run.id).where(Run.device_id == device_id,
                                                 Run.status.in_(RUN_ACTIVE_STATUSES))):
        raise ApiError(409, "device {} is measuring an active run".format(device.name))
    db.session.delete(device)  # its runs keep their samples; their device_id becomes NULL
    db.session.commit()
    return "", 204


# --- device groups -------------------------------------------------------------------------------

def validate_group(body) -> dict:
    """A new group's name and its devices (registered agents in no other group, sharing one token:
    the pool authenticates with one), or ApiError(400) per field."""
    errors = {key: "unknown field" for key in sorted(set(body) - {"name", "device_ids"})}
    message = _new_name_error(body.get("name"), 64, DeviceGroup.name, "group")
    if message:
        errors["name"] = message
    ids = body.get("device_ids")
    devices = []
    if not isinstance(ids, list) or len(ids) < 2 or not all(is_id(i) for i in ids) \
            or len(set(ids)) != len(ids):
        errors["device_ids"] = "give the ids of two or more registered devices"
    elif len(ids) > MAX_GROUP_SIZE:
        errors["device_ids"] = "a group has at most {} devices".format(MAX_GROUP_SIZE)
    else:  # one query for all of them
        found = {d.id: d for d in db.session.scalars(sa.select(Device).where(Device.id.in_(ids)))}
        devices = [found.get(i) for i in ids]
        problem = next(filter(None, map(_member_problem, devices, ids)), None)
        if problem is None and len({d.token for d in devices}) > 1:
            problem = "the devices of a group share one token (start their agents with the same --token)"
        if problem is None:
            problem = _same_agent_twice(devices)
        if problem:
            errors["device_ids"] = problem
    if errors:
        raise ApiError(400, errors=errors)
    return {"name": clean_name(body["name"]), "devices": devices}


def _member_problem(device, device_id):
    """Why `device` cannot join a new group, or None."""
    if device is None:
        return "no device {}".format(device_id)
    if device.kind == "local":
        return "{} is the local device: a group is of device agents".format(device.name)
    if device.group is not None:
        return "{} is in group {} already".format(device.name, device.group.name)
    return None


def _same_agent_twice(devices):
    """Two registrations of one agent are one device: a pool of them would measure one at a time."""
    seen = {}
    for device in devices:
        address = (device.host, device.port)
        if address in seen:
            return "{} and {} are one agent ({}:{}): a group's devices are different agents".format(
                seen[address].name, device.name, device.host, device.port)
        seen[address] = device
    return None


@bp.get("/groups")
def list_groups():
    groups = db.session.scalars(sa.select(DeviceGroup).order_by(DeviceGroup.id)).all()
    return jsonify([group_dict(g) for g in groups])


@bp.post("/groups")
def create_group():
    values = validate_group(_json_body())
    group = DeviceGroup(name=values["name"], devices=values["devices"])
    db.session.add(group)
    db.session.commit()
    return jsonify(group_dict(group)), 201


@bp.delete("/groups/<id:group_id>")
def delete_group(group_id):
    group = db.session.get(DeviceGroup, group_id)
    if group is None:
        raise ApiError(404, "no device group {}".format(group_id))
    active = db.session.scalar(sa.select(Run.id).where(
        Run.group_id == group_id, Run.status.in_(RUN_ACTIVE_STATUSES)))
    if active is not None:
        raise ApiError(409, "run {} measures on group {}: cancel it first".format(active, group.name))
    for device in group.devices:
        device.group = None
    db.session.delete(group)
    db.session.commit()
    return "", 204

