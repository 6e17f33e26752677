"""python3 -m nano_agent: serve latency measurements to the search server (see docs/agent.md)."""
import argparse
import logging
import os
import sys


def parser():
    from .credentials import DEFAULT_CONFIG, TOKEN_ENV
    from .limits import DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_REQUEST_S
    from .protocol import DEFAULT_PORT
    p = argparse.ArgumentParser(prog="python3 -m nano_agent",
                                description="Device agent: measures architectures for the search "
                                            "server over TCP (length-prefixed JSON, HMAC "
                                            "handshake).")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="TCP port (default %(default)s; 0 picks a free port, printed on start)")
    p.add_argument("--token", help="shared secret (default: ${}, else the one in --config, "
                                   "generated there on first start)".format(TOKEN_ENV))
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="config file holding the generated token (default {})".format(
                       DEFAULT_CONFIG))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for CPU measurement (default 1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to measure (default: cuda if available, else cpu)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a client may stay idle, and the most a frame may take to "
                        "arrive (default 30)")
    p.add_argument("--max-memory-mb", type=float, default=DEFAULT_MAX_MEMORY_MB,
                   help="refuse architectures whose estimated inference memory is larger "
                        "(default %(default)s)")
    p.add_argument("--max-request-s", type=float, default=DEFAULT_MAX_REQUEST_S,
                   help="stop a measurement or profile that holds the measuring lock longer, "
                        "with an error (default %(default)s)")
    p.add_argument("--trt-fp16", action="store_true",
                   help="onnxruntime backend: let the TensorRT provider build FP16 engines (the "
                        "agent's id says so, and its measurements are cached apart)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    from .credentials import ConfigError, resolve_token
    try:
        token, source = resolve_token(args.token, args.config, os.environ)
    except (ConfigError, OSError) as e:
        sys.stderr.write("nano_agent: cannot get a token: {}\n".format(e))
        return 2
    from .limits import MEMORY_MB, REQUEST_S, THREADS
    if args.threads not in THREADS:
        sys.stderr.write("nano_agent: --threads must be in {}\n".format(THREADS.describe()))
        return 2
    if args.max_memory_mb not in MEMORY_MB:
        sys.stderr.write("nano_agent: --max-memory-mb must be in {}\n".format(MEMORY_MB.describe()))
        return 2
    if args.max_request_s not in REQUEST_S:
        sys.stderr.write("nano_agent: --max-request-s must be in {}\n".format(REQUEST_S.describe()))
        return 2
    from .server import Agent, serve
    try:
        agent = Agent(token, args.device, args.threads, args.timeout, args.max_memory_mb,
                      args.trt_fp16, args.max_request_s)
    except ValueError as e:
        sys.stderr.write("nano_agent: {}\n".format(e))
        return 2
    logging.getLogger("nano_agent").info("token from %s", source)
    try:
        serve(agent, args.host, args.port)
    except OSError as e:
        sys.stderr.write("nano_agent: cannot listen on {}:{}: {}\n".format(args.host, args.port, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
