"""The certified ``oidc-provider`` (npm) as the upstream "Google": a Node process on loopback.

``UpstreamOIDC`` writes the configuration (clients, accounts, signing keys), starts
``oidc_provider.mjs``, waits for its ``READY <issuer>`` line, and drives its test-control API
(``/__control/*``): revoke a user's grants, make the token endpoint fail, inspect state.
``stop()`` then ``start()`` is an outage: same port, same keys, grants and tokens kept.
"""

from __future__ import annotations

import json
import queue
import secrets
import subprocess
import threading
from pathlib import Path

import httpx2
from joserfc.jwk import KeySet, RSAKey

from tests.conftest import missing_component
from tests.upstream.accounts import DEFAULT_ACCOUNTS, UpstreamAccount

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "oidc_provider.mjs"
READY_TIMEOUT = 60.0


def pinned_version() -> str:
    return json.loads((HERE / "package.json").read_text())["dependencies"]["oidc-provider"]


def check_installed() -> None:
    """``oidc-provider`` at the version ``package.json`` pins, in this folder's node_modules."""
    package = HERE / "node_modules" / "oidc-provider" / "package.json"
    if not package.is_file():
        missing_component(f"oidc-provider is not installed: run `npm ci` in {HERE}")
    installed = json.loads(package.read_text())["version"]
    assert installed == pinned_version(), (
        f"{HERE}/node_modules holds oidc-provider {installed}, package.json pins {pinned_version()}: run `npm ci` in {HERE}"
    )


class UpstreamOIDC:
    """One oidc-provider process and the confidential client registered there for Gatehouse."""

    def __init__(
        self,
        node: str,
        workdir: Path,
        redirect_uris: list[str],
        *,
        accounts: tuple[UpstreamAccount, ...] = DEFAULT_ACCOUNTS,
        client_id: str = "gatehouse-upstream-client",
        token_endpoint_auth_method: str = "client_secret_basic",
        access_token_ttl: int = 3600,
        refresh_token_ttl: int = 14 * 86400,
        api_scopes: tuple[str, ...] = ("calendar.read",),
    ):
        self.node = node
        self.workdir = workdir
        self.redirect_uris = list(redirect_uris)
        self.accounts = {account.username: account for account in accounts}
        self.client_id = client_id
        self.client_secret = secrets.token_urlsafe(32)
        self.token_endpoint_auth_method = token_endpoint_auth_method
        self.resource_server_id = "calendar-api"
        self.resource_server_secret = secrets.token_urlsafe(32)
        self.signing_key = RSAKey.generate_key(2048, parameters={"kid": "upstream-rs256", "use": "sig", "alg": "RS256"},
                                               private=True)
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.api_scopes = list(api_scopes)
        self.cookie_keys = [secrets.token_urlsafe(32)]
        self.port = 0
        self.issuer = ""
        self.process: subprocess.Popen | None = None
        self._log = workdir / "oidc-provider.log"

    # --- process ---------------------------------------------------------------------------

    def _config(self) -> dict:
        return {
            "port": self.port,
            "state_file": str(self.workdir / "state.json"),
            "jwks": {"keys": [self.signing_key.as_dict(private=True)]},
            "cookie_keys": self.cookie_keys,
            "clients": [{
                "client_id": self.client_id, "client_secret": self.client_secret,
                "redirect_uris": self.redirect_uris, "token_endpoint_auth_method": self.token_endpoint_auth_method,
            }],
            "resource_servers": [{"client_id": self.resource_server_id, "client_secret": self.resource_server_secret}],
            "accounts": [account.as_config() for account in self.accounts.values()],
            "api_scopes": self.api_scopes,
            "access_token_ttl": self.access_token_ttl,
            "refresh_token_ttl": self.refresh_token_ttl,
        }

    def start(self) -> UpstreamOIDC:
        """Start the provider (again on the same port after ``stop()``) and wait until it listens."""
        if self.process is not None:
            raise RuntimeError("the upstream OpenID Provider is already running")
        config_path = self.workdir / "config.json"
        config_path.write_text(json.dumps(self._config()))
        log = self._log.open("ab")
        self.process = subprocess.Popen(
            [self.node, str(SCRIPT), str(config_path)], cwd=HERE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        log.close()
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(self.process.stdout, lines), daemon=True).start()
        try:
            line = lines.get(timeout=READY_TIMEOUT)
        except queue.Empty:
            line = ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"oidc-provider did not start (said {line!r}); its log:\n{self.log_tail()}")
        self.issuer = line.split()[1]
        self.port = int(self.issuer.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """Stop the process (by its PID): the upstream is down, connections are refused."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        if not self._log.exists():
            return "(no log)"
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    # --- what a test reads -----------------------------------------------------------------

    def account(self, username: str = "alice") -> UpstreamAccount:
        return self.accounts[username]

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def metadata(self) -> dict:
        """The OpenID Provider metadata (OpenID Connect Discovery 1.0, section 4)."""
        response = httpx2.get(f"{self.issuer}/.well-known/openid-configuration", timeout=30)
        response.raise_for_status()
        return response.json()

    def jwks(self) -> KeySet:
        """The public signing keys, as the provider's ``jwks_uri`` publishes them."""
        return KeySet([RSAKey.import_key(self.signing_key.as_dict(private=False))])

    def introspect(self, token: str) -> dict:
        """RFC 7662 token introspection, authenticated as the calendar API's resource-server client."""
        response = httpx2.post(
            f"{self.issuer}/token/introspection", data={"token": token},
            auth=(self.resource_server_id, self.resource_server_secret), timeout=30,
        )
        response.raise_for_status()
        return response.json()

    # --- test control ----------------------------------------------------------------------

    def _control(self, method: str, action: str, data: dict | None = None) -> dict:
        response = httpx2.request(method, f"{self.issuer}/__control/{action}", data=data, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"control {action} failed: {response.status_code} {response.text}")
        return response.json()

    def revoke_user(self, sub: str) -> dict:
        """The user removes the app's access at the provider: every grant and token of ``sub`` is gone."""
        return self._control("POST", "revoke_user", {"sub": sub})

    def fail_token_endpoint(self, status_or_error: int | str, times: int = 1, *, status: int | None = None) -> None:
        """The next ``times`` token requests fail: an int is a bare HTTP status (HTML body, as an
        overloaded server answers); a string is an RFC 6749 section 5.2 error (JSON, HTTP 400 unless
        ``status`` says otherwise)."""
        if isinstance(status_or_error, int):
            data = {"status": status_or_error, "error": "", "times": times}
        else:
            data = {"status": status or (401 if status_or_error == "invalid_client" else 400),
                    "error": status_or_error, "times": times}
        self._control("POST", "fail_token", data)

    def state(self) -> dict:
        """Live grants (account, client, scope), record counts per model, token requests seen."""
        return self._control("GET", "state")

    @property
    def token_requests(self) -> list[dict]:
        """Each token request: ``grant_type``, ``client_auth``, ``status``, ``error``, ``injected``."""
        return self.state()["token_requests"]


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.strip())
