"""Hardware-aware neural architecture search: the supernet, the latency-aware search, retraining.

Two halves. The torch-free half (TORCH_FREE: the settings, the run directory, the events, the pick
rule, the ranking check, the lookup table, the recipe, the device client and its pool) is all that
the dashboard's web process imports; the rest (data, supernet, search, training, export) runs in
the worker processes. tests/test_layout.py checks both. The device side (the space, the builder, the
measurement) is nano_agent, which runs alone on the Jetson.
"""
TORCH_FREE = ("best", "device_client", "events", "lut", "measurements", "pool", "ranking",
              "recipe", "rundir", "settings", "shapes")
