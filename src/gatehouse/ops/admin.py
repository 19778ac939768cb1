"""The admin listener (``gatehouse serve --admin-port``): ``/metrics`` and ``/healthz`` on their
own port, bound to 127.0.0.1 unless ``--admin-host`` says otherwise, with no authentication:
keep that port off the public network.

It runs in a thread of the ``gatehouse serve`` process itself, so with several workers there is
one listener, and it sums every worker's figures (:mod:`gatehouse.ops.metrics`).
"""

from __future__ import annotations

import socket
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.ops.health import healthz
from gatehouse.ops.metrics import metrics_endpoint


class AdminListenError(OSError):
    """The admin port could not be bound."""


def create_admin_app() -> Starlette:
    return Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])])


class AdminServer:
    """uvicorn serving the admin app on ``host:port`` in a daemon thread."""

    def __init__(self, host: str, port: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise AdminListenError(exc.errno, f"cannot listen on {host}:{port} for the admin port: {exc.strerror}") from exc
        self.sock.listen(128)
        self.server = uvicorn.Server(uvicorn.Config(create_admin_app(), log_config=None, access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="gatehouse-admin", daemon=True)

    def start(self) -> AdminServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()
