"""uvicorn, one worker, one ASGI app listening on several loopback ports at once.

Usage (from the project root)::

    .venv/bin/python bench/serve_ports.py apps.guard_sdk:by_port 8001 8002 8003

The app is a factory (``module:function``, imported from ``bench/``), called once. uvicorn's
command line binds one socket; :meth:`uvicorn.Server.run` serves any number, with the same event
loop and HTTP parser the command line picks (uvloop and httptools when installed). The app tells
the ports apart by ``scope["server"]``.
"""

from __future__ import annotations

import importlib
import socket
import sys
from pathlib import Path

import uvicorn

BENCH_DIR = Path(__file__).resolve().parent


def _listening(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str]) -> int:
    if len(argv) < 2 or ":" not in argv[0]:
        print("usage: serve_ports.py module:factory PORT [PORT ...]", file=sys.stderr)
        return 2
    sys.path.insert(0, str(BENCH_DIR))
    module_name, _, factory_name = argv[0].partition(":")
    app = getattr(importlib.import_module(module_name), factory_name)()
    sockets = [_listening(int(port)) for port in argv[1:]]
    config = uvicorn.Config(app, workers=1, access_log=False, log_level="warning")
    uvicorn.Server(config).run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
