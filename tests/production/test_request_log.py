"""Structured logs of a real ``gatehouse serve`` (issue 7, Operations): one JSON object a line,
request ids in and out, and no secret in any line (AS-20: codes, tokens and passwords are never
written down)."""

from __future__ import annotations

import json
import re
import time

import httpx2

from gatehouse.config import Settings
from tests.production.flows import (
    add_user,
    client_credentials_token,
    register_machine_client,
    register_public_client,
    refresh,
    user_tokens,
)

PASSWORD = "correct horse battery staple"


def json_lines(text: str) -> list[dict]:
    """Every line parsed; a line that is not one JSON object fails the test."""
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) for entry in parsed)
    return parsed


def wait_for(instance, predicate, timeout: float = 10.0) -> list[dict]:
    """The log entries once ``predicate(entries)`` holds (a line is written just after its response)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = json_lines(instance.stderr())
        if predicate(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def access_ids(entries: list[dict]) -> set[str]:
    return {e["request_id"] for e in entries if e["logger"] == "gatehouse.access"}


def test_json_lines_carry_the_request_id_and_no_secret(tmp_path, store_url, secret_key, start_gatehouse):
    instance = start_gatehouse(store_url, tmp_path / "data", secret_key, env={"GATEHOUSE_LOG_FORMAT": "json"})
    add_user(store_url, tmp_path / "data", "erin", PASSWORD)

    machine = register_machine_client(instance.url)
    issued = client_credentials_token(instance.url, machine, headers={"X-Request-ID": "trace-tok-42"})
    assert issued.status_code == 200
    assert issued.headers["x-request-id"] == "trace-tok-42"

    public = register_public_client(instance.url)
    tokens, code = user_tokens(instance.url, public, "erin", PASSWORD)
    rotated = refresh(instance.url, public, tokens["refresh_token"]).json()
    state = "state-that-must-not-be-logged"
    httpx2.get(f"{instance.url}/authorize", params={"client_id": public, "state": state, "code_challenge": "x"})
    secrets_seen = {PASSWORD, machine[1], code, tokens["access_token"], tokens["refresh_token"], rotated["access_token"],
                    rotated["refresh_token"], issued.json()["access_token"], state}

    entries = wait_for(instance, lambda entries: any(e.get("path") == "/authorize" for e in entries))
    for entry in entries:
        assert {"time", "level", "logger", "message", "request_id"} <= set(entry), entry
    token_access = [e for e in entries if e["logger"] == "gatehouse.access" and e["request_id"] == "trace-tok-42"]
    assert len(token_access) == 1
    access = token_access[0]
    assert (access["method"], access["path"], access["status"], access["client"]) == ("POST", "/token", 200, "127.0.0.1")
    assert isinstance(access["duration_ms"], (int, float)) and access["duration_ms"] >= 0
    # a line written in the worker thread that ran the grant carries the same id
    audit = [e for e in entries if e["logger"] == "gatehouse.audit" and e["request_id"] == "trace-tok-42"]
    assert audit and '"token.issued"' in audit[0]["message"]
    # paths without their query strings
    authorize_lines = [e for e in entries if e.get("path") == "/authorize"]
    assert authorize_lines and all("?" not in e["path"] for e in authorize_lines)
    # health checks are not at INFO
    assert not [e for e in entries if e.get("path") == "/healthz"]

    logged = instance.stderr() + instance.stdout()
    for secret in secrets_seen:
        assert secret not in logged


def test_request_ids_are_echoed_when_sane_and_replaced_when_not(tmp_path, secret_key, start_gatehouse):
    instance = start_gatehouse(None, tmp_path / "data", secret_key, extra_args=["--log-format", "json"])
    url = f"{instance.url}/.well-known/oauth-authorization-server"

    sane = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert httpx2.get(url, headers={"X-Request-ID": sane}).headers["x-request-id"] == sane
    generated = {httpx2.get(url).headers["x-request-id"] for _ in range(2)}
    for unusable in (b"two words", b"x" * 129, b"<script>", "id\u00e9".encode()):
        echoed = httpx2.get(url, headers={"X-Request-ID": unusable}).headers["x-request-id"]
        assert echoed.encode() != unusable
        generated.add(echoed)
    assert len(generated) == 6 and all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in generated)

    entries = wait_for(instance, lambda entries: {sane} | generated <= access_ids(entries))
    assert {sane} | generated <= access_ids(entries)


def test_text_format_is_one_line_per_request_with_its_id(tmp_path, secret_key, start_gatehouse):
    instance = start_gatehouse(None, tmp_path / "data", secret_key)  # --log-format text is the default
    assert httpx2.get(f"{instance.url}/jwks", headers={"X-Request-ID": "text-format-1"}).status_code == 200
    deadline = time.monotonic() + 10
    while "[text-format-1]" not in instance.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in instance.stderr().splitlines() if "[text-format-1]" in line)
    assert " INFO gatehouse.access [text-format-1] GET /jwks 200 " in line and line.endswith(" 127.0.0.1")


def test_a_server_error_answers_and_logs_with_the_request_id(tmp_path):
    """A handler that raises: the 500 carries X-Request-ID, and so do its log lines (the access
    line and the error, written outside the middleware that set the id)."""
    import io
    import logging

    from starlette.routing import Route

    from gatehouse.authserver.context import build_context
    from gatehouse.ops.request_log import JsonFormatter, RequestIdFilter
    from gatehouse.serve import create_embedded_app
    from tests.conftest import ThreadedServer, free_socket

    async def boom(request):
        raise RuntimeError("a bug")

    sock = free_socket()
    ctx = build_context(Settings(data_dir=tmp_path / "data", port=sock.getsockname()[1]))
    app = create_embedded_app(ctx)
    app.router.routes.insert(0, Route("/boom", boom))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("gatehouse.access", "gatehouse.authserver")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with ThreadedServer(app, sock):
            response = httpx2.get(f"http://127.0.0.1:{sock.getsockname()[1]}/boom", headers={"X-Request-ID": "bug-report-7"})
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        ctx.engine.dispose()
    assert response.status_code == 500 and response.json()["error"] == "server_error"
    assert response.headers["x-request-id"] == "bug-report-7"
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = next(e for e in entries if e["logger"] == "gatehouse.access")
    error = next(e for e in entries if e["logger"] == "gatehouse.authserver")
    assert (access["request_id"], access["status"], access["path"]) == ("bug-report-7", 500, "/boom")
    assert error["request_id"] == "bug-report-7" and "RuntimeError: a bug" in error["exception"]
