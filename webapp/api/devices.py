"""Devices: register, list, show, check, profile (their lookup tables), delete."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Response, current_app, jsonify

from nano_agent import limits
from nano_agent.protocol import DEFAULT_PORT
from nano_agent.space import SearchSpace
from search_core.settings import CHOICES, SearchConfig

from ..devices import DeviceError
from ..extensions import db
from ..models import RUN_ACTIVE_STATUSES, Device, DeviceLut, Run, Specialisation

from .errors import ApiError, bp, get_device, json_body
from .validation import clean_name, host_error, new_name_error, text_error


# what a device profile may set: the space's setting, with the run form's defaults
PROFILE_LIMITS = {"resolution": (int, limits.RESOLUTION), "width_mult": (float, limits.WIDTH_MULT),
                  "num_classes": (int, limits.NUM_CLASSES), "in_channels": (int, limits.IN_CHANNELS)}
PROFILE_DEFAULTS = {"resolution": SearchConfig.resolution, "width_mult": SearchConfig.width_mult,
                    "num_classes": 10, "in_channels": 1}


def validate_device(body) -> dict:
    """The fields of a device registration, or ApiError(400) with a message per field."""
    errors = {}
    message = new_name_error(body.get("name"), 128, Device.name, "device")
    if message:
        errors["name"] = message
    host = body.get("host")
    message = text_error(host, "a host name or IP address is required")
    if message:
        errors["host"] = message
    else:
        message = host_error(host.strip())
        if message:
            errors["host"] = message
    port = body.get("port", DEFAULT_PORT)
    if isinstance(port, str) and port.strip().isdigit() and len(port.strip()) <= 5:
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        errors["port"] = "must be an integer from 1 to 65535"
    token = body.get("token")
    message = text_error(token, "the token the agent printed when it started is required")
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
    device = Device(kind="agent", status="unknown", **validate_device(json_body()))
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
    values = validate_profile(json_body(optional=True))
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
    for model in (Run, Specialisation):
        if db.session.scalar(sa.select(model.id).where(model.device_id == device_id,
                                                       model.status.in_(RUN_ACTIVE_STATUSES))):
            raise ApiError(409, "device {} is measuring an active {}".format(
                device.name, model.__name__.lower()))
    db.session.delete(device)  # its runs keep their samples; their device_id becomes NULL
    db.session.commit()
    return "", 204
