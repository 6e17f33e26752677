"""What the dashboard keeps of its devices' measurements, for every run to share: the latency cache
(one row per device, architecture and input shape) and the calibrated lookup tables (one per
device and setting of the space)."""
from __future__ import annotations

import json

import sqlalchemy as sa

from search_core.measurements import LatencyCache

from .extensions import db
from .models import DeviceLut, LatencyCacheEntry, utcnow


def load_measurements(cache: LatencyCache) -> LatencyCache:
    """Put every stored measurement in ``cache`` (a run's cache file, or one in memory): the key
    names the device by its identity, not its address, and the input shape, so only the same
    device's entries can ever hit."""
    for entry in db.session.scalars(sa.select(LatencyCacheEntry)):
        key = LatencyCache.key(entry.device_key, entry.arch_hash, entry.input_shape.split("x"))
        if cache.get(key) is None:
            cache.put(key, entry.stats_data)
    return cache


def save_measurements(cache: LatencyCache) -> int:
    """Store the measurements of ``cache`` that are new; returns how many. A device measures an
    architecture once, whichever run asks next."""
    columns = (LatencyCacheEntry.device_key, LatencyCacheEntry.arch_hash, LatencyCacheEntry.input_shape)
    known = set(tuple(row) for row in db.session.execute(sa.select(*columns)))
    added = 0
    for key, stats in cache.items():
        parts = tuple(key.rsplit("|", 2))
        if len(parts) != 3 or parts in known:
            continue
        entry = LatencyCacheEntry(device_key=parts[0], arch_hash=parts[1], input_shape=parts[2])
        entry.stats_data = stats
        db.session.add(entry)
        known.add(parts)
        added += 1
    db.session.commit()
    return added


def save_lut(device_id: int, lut: dict, run_id: int | None = None) -> DeviceLut:
    """Store a calibrated table as the device's table for its setting, replacing an older one."""
    space = lut["space"]
    setting = {"device_id": device_id, "device_key": str(lut["device_id"]),
               "resolution": int(space["resolution"]), "width_mult": float(space["width_mult"]),
               "num_classes": int(space["num_classes"]), "in_channels": int(space["in_channels"])}
    row = db.session.scalars(sa.select(DeviceLut).filter_by(**setting)).first()
    if row is None:
        row = DeviceLut(**setting)
        db.session.add(row)
    row.lut = json.dumps(lut, separators=(",", ":"), sort_keys=True)
    row.profiled_at = utcnow()
    row.run_id = run_id
    db.session.commit()
    return row


def stored_luts(device_id: int, resolution: int, width_mult: float) -> list[dict]:
    """The device's calibrated tables that may fit a run at this resolution and width (the worker
    checks the rest: classes, input channels, the measuring identity)."""
    rows = db.session.scalars(sa.select(DeviceLut).filter_by(
        device_id=device_id, resolution=resolution, width_mult=width_mult)
        .order_by(DeviceLut.profiled_at.desc()))
    return [row.lut_data for row in rows if row.calibration]
