"""Retraining a run's sample or its reference: create, list, cancel, download the files."""
from __future__ import annotations

import os

from flask import current_app, jsonify, send_file

from nano_agent import limits
from search_core.recipe import Recipe

from ..extensions import db
from ..ids import is_id
from ..models import TRAINING_FILES, Run, Sample, Specialisation, Training
from ..serialize import sample_number, training_dict

from .errors import ApiError, bp, get_row, get_run, json_body
from .validation import integer_error


TRAINING_LIMITS = {"epochs": limits.Limit(1, 10000), "seed": limits.Limit(0, 2 ** 31 - 1)}


def validate_training(run: Run, body: dict) -> dict:
    """What to retrain (``sample_id``, ``reference``: true for MobileNetV2, or the pick of a
    ``specialisation_id``) and how (``epochs`` default the recipe's, ``seed`` default the run's),
    or ApiError(400) per field."""
    errors, values = {}, {}
    for name, default in (("epochs", Recipe.epochs), ("seed", run.config_data.get("seed", 0))):
        values[name] = body.get(name, default)
        if message := integer_error(values[name], TRAINING_LIMITS[name]):
            errors[name] = message
    what = [name for name in ("sample_id", "reference", "specialisation_id") if name in body]
    unknown = sorted(set(body) - set(what) - {"epochs", "seed"})
    for name in unknown:
        errors[name] = "unknown field"
    if what == ["specialisation_id"]:
        specialisation = db.session.get(Specialisation, body["specialisation_id"]) \
            if is_id(body["specialisation_id"]) else None
        pick = specialisation.pick_data if specialisation is not None else None
        if specialisation is None or specialisation.run_id != run.id:
            errors["specialisation_id"] = "run {} has no specialisation {}".format(
                run.id, body["specialisation_id"])
        elif not isinstance(pick, dict) or not isinstance(pick.get("arch"), dict):
            errors["specialisation_id"] = "specialisation {} has no pick yet".format(
                specialisation.id)
        else:
            values.update(sample=None, arch=pick["arch"], arch_hash=pick["arch_hash"],
                          label="pick for {:g} ms".format(specialisation.target_latency_ms or 0))
    elif body.get("reference") is True and what == ["reference"]:
        reference = run.reference_data or {}
        if not isinstance(reference.get("arch"), dict):
            errors["reference"] = "this run has no reference architecture to retrain yet"
        values.update(sample=None, arch=reference.get("arch"), arch_hash=reference.get("arch_hash"),
                      label="MobileNetV2")
    elif is_id(body.get("sample_id")) and what == ["sample_id"]:
        sample = db.session.get(Sample, body["sample_id"])
        if sample is None or sample.run_id != run.id:
            errors["sample_id"] = "run {} has no sample {}".format(run.id, body["sample_id"])
        else:
            values.update(sample=sample, arch=sample.arch, arch_hash=sample.arch_hash,
                          label="sample #{}".format(sample_number(sample)))
    else:
        errors["sample_id"] = 'give a sample of the run ("sample_id"), "reference": true, or a ' \
            'specialisation of the run ("specialisation_id")'
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
    values = validate_training(run, json_body())
    training = Training(run_id=run.id, sample_id=values["sample"].id if values["sample"] else None,
                        arch_hash=values["arch_hash"], label=values["label"], status="queued",
                        epochs=values["epochs"], seed=values["seed"])
    training.arch = values["arch"]
    db.session.add(training)
    db.session.flush()
    current_app.extensions["workers"].submit(training)  # it waits for a slot as a run does
    return jsonify(training_dict(training)), 201


def get_training(training_id) -> Training:
    return get_row(Training, training_id, "training")


@bp.post("/trainings/<id:training_id>/cancel")
def cancel_training(training_id):
    training = get_training(training_id)
    if not training.active:
        raise ApiError(409, "training {} is {}, not running".format(training_id, training.status))
    current_app.extensions["workers"].cancel(Training, training_id)
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
