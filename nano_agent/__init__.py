"""The device agent: runs on the Jetson Nano, measures architectures sent over TCP.

`python3 -m nano_agent --port 8765` listens for the search server (docs/agent.md); the wire protocol
is in `protocol.py` (docs/protocol.md). Depends on torch and search_core's builder/measure modules
only; Python 3.6 / PyTorch 1.10 compatible. This file imports nothing heavy: the server-side client
imports `nano_agent.protocol` without torch being needed here.
"""
__version__ = "1.0.0"
