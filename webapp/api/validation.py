"""What the API checks in its bodies: names, host names, a run's settings (search_core.settings checks
each by its declared type and limit), dataset directories."""
from __future__ import annotations

import ipaddress
import os
import re
import unicodedata

import sqlalchemy as sa
from flask import current_app

from search_core.settings import SearchConfig, is_text, setting_errors

from ..config import SERVER_SETTINGS
from ..extensions import db
from ..ids import is_id
from ..paths import dataset_roots, public_path, under

from .errors import ApiError


def integer_error(value, limit):
    """What is wrong with an integer field bounded by ``limit``, or None (a bool is no integer)."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in limit:
        return "must be an integer in " + limit.describe()
    return None


def text_error(value, required, limit=255):
    """What is wrong with a required text field, or None (``required`` says what is missing)."""
    if not isinstance(value, str) or not value.strip():
        return required
    if len(value.strip()) > limit:
        return "at most {} characters".format(limit)
    return None if is_text(value) else "must be text without control characters"


def _name_error(name, limit=255):
    """What is wrong with a name, or None: besides `text_error`'s checks, no Unicode format
    characters (a zero-width space or a right-to-left override made names look like others)."""
    message = text_error(name, "a name is required", limit)
    if message is None and any(unicodedata.category(c) == "Cf" for c in name):
        message = "must not contain invisible or direction-changing characters"
    return message


def clean_name(name: str) -> str:
    """A name as it is stored and compared: NFKC-normalised (full-width and other compatibility
    forms folded into the plain ones, so that 'ｌｏｃａｌ' is 'local'), without outer spaces."""
    return unicodedata.normalize("NFKC", name).strip()


def new_name_error(name, limit, column, kind):
    """Why ``name`` cannot name a new ``kind`` whose names are ``column``: missing, too long, or
    taken; None if it can."""
    message = _name_error(name, limit)
    if message is None and db.session.scalar(
            sa.select(column).where(column == clean_name(name))) is not None:
        message = "a {} with this name exists".format(kind)
    return message


# a name's label; "_" too, which names in /etc/hosts and of mDNS may hold
DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def host_error(host: str):
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
    naming every field that is wrong (search_core.settings checks each setting by its declared type
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
