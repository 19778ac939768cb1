"""An HTTP server that breaks every connection on purpose, as a crashing MCP server looks on the wire.

Real MCP servers don't break on demand, so this one speaks raw HTTP/1.1: it reads the whole
request, writes the bytes it was given (a response cut short), and closes the connection.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import threading


def sse_cut_after(*messages: dict) -> bytes:
    """A 200 SSE response (chunked) carrying ``messages`` as events, without the final chunk."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = b""
    for message in messages:
        event = f"event: message\ndata: {json.dumps(message)}\n\n".encode()
        chunks += b"%x\r\n%s\r\n" % (len(event), event)
    return head + chunks


def json_cut_after(message: dict, keep: int) -> bytes:
    """A 200 JSON response whose Content-Length promises all of ``message`` but only ``keep`` bytes follow."""
    body = json.dumps(message).encode()
    assert keep < len(body)
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body[:keep])


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()  # the request line
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(headers.get("content-length", 0)))
        self.server.requests.append(json.loads(body) if body else None)
        self.wfile.write(self.server.reply)
        self.wfile.flush()
        # returning closes the connection: a FIN in the middle of the promised body


@contextlib.contextmanager
def broken_upstream(reply: bytes):
    """Serve on loopback; yields ``(url, requests)``: the MCP endpoint URL and the JSON bodies received."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.reply = reply
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
