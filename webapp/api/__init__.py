"""JSON API under /api, one module per resource: runs (and the form's defaults), samples and
downloads, trainings, ranking checks, specialisations, devices, groups; validation holds what the
bodies are checked against, errors the blueprint and its JSON errors.

Errors are JSON: 400 ``{"errors": {field: message}}`` for bad input, 404 / 409 ``{"error": ...}``,
500 ``{"error": ...}`` (the traceback goes to the server's log).
"""
from . import devices, groups, ranking, runs, samples, specialisations, trainings  # noqa: F401
from .errors import bp  # noqa: F401  (what the app registers)
