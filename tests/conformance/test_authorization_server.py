"""The Gatehouse AS against the official MCP conformance suite's authorization-server scenarios.

``conformance authorization`` checks the AS metadata, then runs an authorization code grant:
it prints an authorization URL and waits for a browser to bring the answer to its callback
listener on ``http://127.0.0.1:<port>/callback``. The test plays that browser with plain HTTP
form posts (log in, approve), for a public client and for a confidential one, each registered
with that redirect URI. The callback port is the harness's ``--port``: a free one is chosen, so
runs never depend on port 3000 being free.

The confidential client meets a harness bug (0.2.0-alpha.12, and its main branch): with
``--client-secret`` its authorization-code-grant scenario still authenticates with ``none``
whenever the AS metadata lists ``none`` among ``token_endpoint_auth_methods_supported``
(``selectTokenAuthMethod``), and the AS rightly answers 401 (RFC 6749 section 3.2.1: a
confidential client must authenticate). So the confidential run reaches the AS through a
proxy (``proxy.py``) whose only change is the metadata a confidential-clients-only deployment
would publish: ``none`` left out of ``token_endpoint_auth_methods_supported``. The AS's issuer
is the proxy's URL; every request, the token request with the client secret included, reaches
the real AS unchanged.
"""

from __future__ import annotations

import subprocess
import threading
import time
from urllib.parse import urljoin

import httpx2
import pytest

from tests.conformance.harness import HARNESS_JS, HERE, collect, free_port, harness_env, plain
from tests.conformance.proxy import ReverseProxy
from tests.conftest import ThreadedServer
from tests.support.browser import Browser

HARNESS_TIMEOUT = 60


class HarnessProcess:
    """``conformance authorization`` running in the background; its stdout read line by line."""

    def __init__(self, node: str, args: list[str]):
        self.args = args
        self.process = subprocess.Popen(
            [node, str(HARNESS_JS), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=harness_env(node), cwd=HERE,
        )
        self.lines: list[str] = []
        self.stderr = ""
        self._new_line = threading.Condition()
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self):
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(plain(line.rstrip("\n")))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def _read_stderr(self):
        self.stderr = self.process.stderr.read()

    def wait_for_line(self, predicate, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._readers[0].is_alive()):
                    return None
                self._new_line.wait(min(left, 0.5))

    def finish(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for reader in self._readers:
            reader.join(5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines) + ("\n--- stderr ---\n" + plain(self.stderr).strip() if self.stderr.strip() else "")


def play_browser(base_url: str, authorization_url: str, username: str, password: str) -> str:
    """Log in and approve, as a person would; returns where the AS finally redirects the browser."""
    browser = Browser(base_url)
    try:
        response = browser.follow(browser.get(authorization_url))
        if response.status_code == 200 and 'name="password"' in response.text:
            response = browser.follow(browser.submit(response, {"username": username, "password": password}))
        if response.status_code == 200 and 'name="decision"' in response.text:
            response = browser.submit(response, button=("decision", "approve"))
        assert response.status_code in (302, 303), (
            f"the AS did not redirect back after login and consent: HTTP {response.status_code}\n{response.text[:1000]}"
        )
        return urljoin(str(response.url), response.headers["location"])
    finally:
        browser.close()


def without_none(path: str, document: dict) -> dict:
    """The AS metadata of a deployment for confidential clients only (see the module docstring)."""
    if path.startswith(("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")):
        methods = document.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list):
            document["token_endpoint_auth_methods_supported"] = [m for m in methods if m != "none"]
    return document


@pytest.fixture
def as_overrides(request, extra_socket):
    """The confidential run's AS has the proxy's URL as its issuer."""
    if request.node.callspec.params.get("kind") == "confidential":
        return {"issuer": f"http://127.0.0.1:{extra_socket.getsockname()[1]}"}
    return {}


@pytest.fixture
def issuer(request, live_as, extra_socket):
    """Where the harness and the browser find the AS: the AS itself, or the proxy in front of it."""
    if request.node.callspec.params.get("kind") != "confidential":
        yield live_as.base_url
        return
    proxy = ReverseProxy(live_as.base_url, rewrite_json=without_none)
    with ThreadedServer(proxy, extra_socket):
        yield live_as.ctx.issuer


@pytest.mark.parametrize("kind", ["public", "confidential"])
def test_authorization_server_suite(live_as, issuer, node, kind, tmp_path):
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    username, password = live_as.add_user()
    # The harness authenticates with client_secret_post when the AS offers it (as Gatehouse does).
    auth_method = "client_secret_post" if kind == "confidential" else "none"
    client = live_as.register(client_name=f"Conformance ({kind})", redirect_uris=[redirect_uri],
                              token_endpoint_auth_method=auth_method, scope="notes:read")
    args = ["authorization", "--url", issuer, "--client-id", client["client_id"],
            "--resource", f"{issuer}/mcp", "--port", str(port)]
    if kind == "confidential":
        args += ["--client-secret", client["client_secret"]]
    shown = [arg if arg != client.get("client_secret") else "<secret>" for arg in args]

    harness = HarnessProcess(node, [*args, "-o", str(tmp_path / "results")])
    try:
        url = harness.wait_for_line(lambda line: line.startswith(f"{issuer}/authorize?"), HARNESS_TIMEOUT)
        if url is not None:
            listening = harness.wait_for_line(lambda line: "Callback server started" in line, 10)
            assert listening, f"the harness's callback listener did not start on port {port}:\n{harness.output()}"
            callback = play_browser(issuer, url, username, password)
            assert callback.startswith(redirect_uri + "?"), f"the AS redirected to {callback}, not to {redirect_uri}"
            delivered = httpx2.get(callback, timeout=10)
            assert delivered.status_code == 200, f"the harness's callback answered HTTP {delivered.status_code}"
        code = harness.finish(HARNESS_TIMEOUT)
    finally:
        if harness.process.poll() is None:
            harness.process.kill()
            harness.finish(5)
    output = harness.output()
    summary = output[output.index("=== SUMMARY ==="):].split("\n--- stderr ---")[0] if "=== SUMMARY ===" in output else ""
    print(f"\nconformance {' '.join(shown)}  ({kind} client)\n{summary.strip()}", flush=True)
    assert url is not None, f"the harness printed no authorization URL for {issuer}:\n{output}"
    failing = "\n".join(result.explain() for result in collect(tmp_path / "results").values() if not result.passed)
    assert code == 0, f"conformance {' '.join(shown)} failed (exit {code}):\n{output}\n\n{failing}"
