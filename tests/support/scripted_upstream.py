"""A keep-alive HTTP/1.1 server that answers each request as a script says: whole, cut or not at all.

The gateway's fast path only uses kept-alive upstream connections, so an upstream that breaks
every connection (broken_upstream.py) never reaches it. This one answers the first requests
properly, keeping the connection open, and misbehaves on the request the test chooses.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import threading

from tests.support.broken_upstream import json_cut_after, sse_cut_after


def json_reply(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def echo(request: dict) -> bytes:
    """A whole JSON answer to ``request``, naming its id."""
    return json_reply({"jsonrpc": "2.0", "id": request.get("id"), "result": {"echo": request.get("params")}})


CUT_JSON = "cut-json"
CUT_SSE = "cut-sse"
SILENT = "silent"
UNAUTHORIZED = "unauthorized"
UPSTREAM_CHALLENGE = b'Bearer resource_metadata="http://upstream.internal/.well-known/oauth-protected-resource"'


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            if not self.rfile.readline():  # the request line, or the end of the connection
                self.server.closed_connections += 1
                return
            length = 0
            headers = []
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers.append((name.strip(), value.strip()))
                if name.strip().lower() == "content-length":
                    length = int(value)
            request = json.loads(self.rfile.read(length)) if length else {}
            self.server.requests.append(request)
            self.server.request_headers.append(headers)
            action = self.server.script.pop(0) if self.server.script else None
            if action == CUT_JSON:
                self.wfile.write(json_cut_after({"jsonrpc": "2.0", "id": request.get("id"), "result": {}}, 10))
                return
            if action == CUT_SSE:
                self.wfile.write(sse_cut_after({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}))
                self.wfile.flush()
                return
            if action == UNAUTHORIZED:
                body = b'{"error": "invalid_token"}'
                self.wfile.write(b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: %s\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (UPSTREAM_CHALLENGE, len(body), body))
                self.wfile.flush()
                continue
            if action == SILENT:
                self.rfile.read()  # until the gateway gives up and closes the connection
                self.server.closed_connections += 1
                return
            self.wfile.write(echo(request))
            self.wfile.flush()


@contextlib.contextmanager
def scripted_upstream(script: list[str]):
    """Serve on loopback; yields the server: ``.url``, ``.requests`` (and their ``.request_headers``),
    ``.script`` (editable), ``.closed_connections``."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.script = script
    server.requests = []
    server.request_headers = []
    server.closed_connections = 0
    server.url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
