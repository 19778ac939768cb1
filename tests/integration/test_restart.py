"""Restarting ``gatehouse serve`` keeps clients, consents, grants and keys (issue 2 acceptance)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import free_socket
from tests.support.browser import Browser, authorize, pkce_pair

GATEHOUSE = [sys.executable, "-m", "gatehouse.cli"]
REDIRECT = "http://127.0.0.1:9/callback"


def start_serve(data_dir: Path, port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [*GATEHOUSE, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gatehouse serve exited: {process.stdout.read()}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx2.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("gatehouse serve did not start within 30 s")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def test_restart_keeps_clients_consents_grants_and_keys(tmp_path, store_url):
    data_dir = tmp_path / "data"
    env = {**os.environ, "GATEHOUSE_DATABASE_URL": store_url}
    env.pop("GATEHOUSE_SECRET_KEY", None)
    added = subprocess.run([*GATEHOUSE, "users", "add", "carol", "--password-stdin", "--data-dir", str(data_dir)],
                           input="a long enough password\n", env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}"
    server = start_serve(data_dir, port, env)
    try:
        client = httpx2.post(f"{base}/register", json={"client_name": "Restart", "redirect_uris": [REDIRECT],
                                                       "token_endpoint_auth_method": "none"}).json()
        browser = Browser(base)
        verifier, challenge = pkce_pair()
        result = authorize(browser, client_id=client["client_id"], redirect_uri=REDIRECT, challenge=challenge,
                           username="carol", password="a long enough password")
        tokens = httpx2.post(f"{base}/token", data={"grant_type": "authorization_code", "code": result.code, "client_id": client["client_id"],
                                                    "redirect_uri": REDIRECT, "code_verifier": verifier}).json()
        jwks_before = httpx2.get(f"{base}/jwks").json()
    finally:
        stop(server)

    assert (data_dir / "secret.key").stat().st_mode & 0o777 == 0o600
    server = start_serve(data_dir, port, env)
    try:
        jwks_after = httpx2.get(f"{base}/jwks").json()
        assert jwks_after == jwks_before
        decoded = jwt.decode(tokens["access_token"], KeySet.import_key_set(jwks_after), algorithms=["ES256"])
        assert decoded.claims["sub"] == "carol"

        refreshed = httpx2.post(f"{base}/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                                       "client_id": client["client_id"]})
        assert refreshed.status_code == 200, refreshed.text

        # the consent and the browser session survived: a new authorization needs no login or consent
        verifier, challenge = pkce_pair()
        again = authorize(browser, client_id=client["client_id"], redirect_uri=REDIRECT, challenge=challenge)
        assert again.response.status_code == 302 and again.code
    finally:
        stop(server)
