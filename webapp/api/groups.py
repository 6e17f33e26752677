"""Device groups: identical agents that measure as one pool."""
from __future__ import annotations

import sqlalchemy as sa
from flask import jsonify

from ..extensions import db
from ..ids import is_id
from ..models import RUN_ACTIVE_STATUSES, Device, DeviceGroup, Run
from ..serialize import group_dict

from .errors import ApiError, bp, json_body
from .validation import clean_name, new_name_error


MAX_GROUP_SIZE = 256  # devices in one pool: a lab's rack, not the 100,000 ids a probe sent


def validate_group(body) -> dict:
    """A new group's name and its devices (registered agents in no other group, sharing one token:
    the pool authenticates with one), or ApiError(400) per field."""
    errors = {key: "unknown field" for key in sorted(set(body) - {"name", "device_ids"})}
    message = new_name_error(body.get("name"), 64, DeviceGroup.name, "group")
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
    values = validate_group(json_body())
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
