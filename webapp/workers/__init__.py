"""Background work: every kind of worker (a search, a retraining, a specialisation) lives one life
(``lifecycle.Workers``: queued, launched through the executor, followed, watched, cancelled, its
exit recorded); what differs between kinds is their table of event handlers (search.py,
training.py, specialisation.py).

The web process does I/O only (a crash, a frozen worker or its memory cannot take the dashboard
down): each worker is ``python -m search_core ... --events jsonl`` in its own OS process (a
subprocess, or on a Ray node: webapp/executors.py), and the dashboard reads its standard output.
"""
from .lifecycle import Workers  # noqa: F401
from .orphans import stop_orphan  # noqa: F401
from .search import MAX_RETRIES, SearchWorkers  # noqa: F401
from .specialisation import SpecialisationWorkers  # noqa: F401
from .training import TrainingWorkers  # noqa: F401
