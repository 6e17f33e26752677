"""The device agent: runs on the Jetson Nano, measures architectures sent over TCP.

Depends on torch and search_core's builder only; Python 3.6 / PyTorch 1.10 compatible.
(The agent itself arrives with the device-agent issue.)
"""
