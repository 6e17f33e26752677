"""What a client may learn of the server's disk: paths relative to the roots that hold them (the
dataset roots, the data directory), never the server's own layout; the roots a run's data may
come from."""
from __future__ import annotations

import os

from flask import current_app


def dataset_roots() -> list[str]:
    """Where a run's data may come from (webapp.config.Config.DATASET_ROOTS), as real paths."""
    roots = current_app.config["DATASET_ROOTS"] or [
        os.path.join(current_app.config["DATA_DIR"], "datasets")]
    return [os.path.realpath(root) for root in roots]


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def public_path(path: str | None, roots) -> str | None:
    """A server path as the API shows it: relative to the first of `roots` that holds it; the
    server's own layout stays private."""
    if not path:
        return path
    real = os.path.realpath(path)
    for root in roots:
        if under(real, root):
            return os.path.relpath(real, root)
    return os.path.basename(real)


def public_text(text: str | None) -> str | None:
    """A worker's message with the server paths it names made relative, as public_path does."""
    if not text:
        return text
    for root in dataset_roots() + [os.path.realpath(current_app.config["DATA_DIR"])]:
        text = text.replace(root.rstrip(os.sep) + os.sep, "")
    return text
