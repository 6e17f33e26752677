"""Hardware-aware neural architecture search: search space, supernet, latency-aware search.

This package is imported by the device agent (for the architecture builder), so this file and the
modules the builder needs (arch, space, blocks, builder, complexity, measure) stay Python 3.6 /
PyTorch 1.10 compatible and import nothing heavy at package level.
"""
