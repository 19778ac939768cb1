"""Rate limits across instances (issue 7; S-T7, S-C2): two ``gatehouse serve`` processes on one
PostgreSQL database, counting in the store or, with ``GATEHOUSE_REDIS_URL``, in Redis. Requests
alternate between the instances, so a limit holds only if the count is shared.

The instances trust 127.0.0.1 as a proxy (``GATEHOUSE_FORWARDED_ALLOW_IPS``), so each test speaks
from addresses of its own through ``X-Forwarded-For``; a separate instance that trusts no proxy
shows the header cannot be used to escape a limit, and that a lockout ends after its window.
"""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import create_engine, func, select

from gatehouse.authserver.login_throttle import DEVICE_COOKIE
from gatehouse.store.models import RateLimitCounter
from tests.conftest import missing_component
from tests.production.conftest import create_postgres_database, drop_postgres_database
from tests.production.flows import add_user, client_credentials_token, register_machine_client, submit_sign_in
from tests.production.harness import RunningInstance, start_gatehouse
from tests.support.browser import Browser

ISSUER = "https://auth.gatehouse.test"
REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "correct horse battery staple"
LIMITS = {
    "GATEHOUSE_FORWARDED_ALLOW_IPS": "127.0.0.1",
    "GATEHOUSE_REGISTRATION_RATE_PER_MINUTE": "4",
    "GATEHOUSE_TOKEN_RATE_PER_MINUTE_PER_CLIENT": "6",
    "GATEHOUSE_TOKEN_RATE_PER_MINUTE_PER_ADDRESS": "10",
    "GATEHOUSE_FAILED_CLIENT_AUTH_PER_MINUTE": "3",
    "GATEHOUSE_FAILED_LOGIN_PER_MINUTE": "3",
    "GATEHOUSE_FAILED_LOGIN_PER_ACCOUNT": "8",
    "GATEHOUSE_FAILED_LOGIN_PER_ADDRESS": "6",
    "GATEHOUSE_LOGIN_MAX_LOCKOUT": "900",
    "GATEHOUSE_CIMD_FETCHES_PER_MINUTE_PER_HOST": "3",
    "GATEHOUSE_CIMD_ALLOW_INSECURE_LOOPBACK": "true",
}
USERS = ("dave", "carol", "erin", *(f"sprayed-{n}" for n in range(7)))
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


def new_address() -> str:
    """An address no other test has used (TEST-NET-2), sent as X-Forwarded-For."""
    return next(_addresses)


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@dataclass
class Pair:
    a: RunningInstance
    b: RunningInstance
    database_url: str
    backend: str

    def alternate(self):
        return itertools.cycle((self.a, self.b))


@pytest.fixture(scope="module", params=["store", "redis"])
def pair(request, tmp_path_factory):
    env = dict(LIMITS)
    cleanup = []
    if request.param == "redis":
        import redis

        prefix = f"gh-test-{uuid.uuid4().hex[:8]}"
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            missing_component(f"Redis not reachable at {REDIS_URL}: {exc}")
        env.update(GATEHOUSE_REDIS_URL=REDIS_URL, GATEHOUSE_REDIS_KEY_PREFIX=prefix)
        cleanup.append(lambda: [client.delete(name) for name in client.scan_iter(f"{prefix}:*")])
    database_url = create_postgres_database()
    cleanup.append(lambda: drop_postgres_database(database_url.rsplit("/", 1)[1]))
    root = tmp_path_factory.mktemp(f"limits-{request.param}")
    secret = secrets.token_hex(32)
    instances: list[RunningInstance] = []
    try:
        for name in "ab":
            instances.append(start_gatehouse(database_url, root / name, secret, ISSUER, [], env))
        for username in USERS:
            add_user(database_url, root / "a", username, PASSWORD)
        yield Pair(*instances, database_url=database_url, backend=request.param)
    finally:
        for instance in instances:
            instance.stop()
        for step in reversed(cleanup):
            step()


def assert_limited(response: httpx2.Response, what: str) -> int:
    """A 429 that says what was limited and how long to wait, as OAuth clients read errors."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 120  # a sliding minute at its limit n clears within 60 * (1 + 1/n) s
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert f"too many {what}; retry after {retry_after} seconds" == body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    return retry_after


def register(instance: RunningInstance, address: str) -> httpx2.Response:
    return httpx2.post(f"{instance.url}/register", json={"client_name": "Flood", "redirect_uris": ["http://127.0.0.1:9/cb"],
                                                        "token_endpoint_auth_method": "none"}, headers=via(address), timeout=30)


def machine_client(pair: Pair) -> tuple[str, str]:
    response = httpx2.post(f"{pair.a.url}/register", json={
        "client_name": "Limited machine", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic",
    }, headers=via(new_address()), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["client_id"], response.json()["client_secret"]


# -- /register ---------------------------------------------------------------------------------

def test_S_C2_registrations_per_address_are_counted_across_instances(pair):
    flooder, bystander = new_address(), new_address()
    instances = pair.alternate()
    assert [register(next(instances), flooder).status_code for _ in range(4)] == [201] * 4
    assert_limited(register(pair.a, flooder), "registrations from this address")
    assert_limited(register(pair.b, flooder), "registrations from this address")
    assert register(pair.b, bystander).status_code == 201, "the limit is per address"


def test_the_counters_live_where_configured(pair):
    register(pair.a, new_address())
    engine = create_engine(pair.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.scalar(select(func.count()).select_from(RateLimitCounter))
    finally:
        engine.dispose()
    if pair.backend == "redis":
        assert rows == 0, "with GATEHOUSE_REDIS_URL the counts are kept in Redis"
    else:
        assert rows > 0


# -- /token ------------------------------------------------------------------------------------

def test_token_requests_per_client_are_counted_across_instances(pair):
    client, other = machine_client(pair), machine_client(pair)
    address = new_address()
    instances = pair.alternate()
    for _ in range(6):
        assert client_credentials_token(next(instances).url, client, headers=via(address)).status_code == 200
    for instance in (pair.a, pair.b):
        assert_limited(client_credentials_token(instance.url, client, headers=via(new_address())), "token requests by this client")
    assert client_credentials_token(pair.b.url, other, headers=via(address)).status_code == 200, "the limit is per client"


def test_token_requests_per_address_are_counted_across_instances(pair):
    first, second = machine_client(pair), machine_client(pair)
    address = new_address()
    instances = pair.alternate()
    for client in (first, second, first, second, first, second, first, second, first, second):
        assert client_credentials_token(next(instances).url, client, headers=via(address)).status_code == 200
    for instance in (pair.a, pair.b):
        assert_limited(client_credentials_token(instance.url, second, headers=via(address)), "token requests from this address")
    assert client_credentials_token(pair.a.url, first, headers=via(new_address())).status_code == 200, "the limit is per address"


def test_S_T7_failed_client_authentications_are_counted_across_instances(pair):
    client_id, secret = machine_client(pair)
    address = new_address()
    instances = pair.alternate()
    for guess in range(3):
        refused = client_credentials_token(next(instances).url, (client_id, f"guess-{guess}"), headers=via(address))
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    for instance in (pair.b, pair.a):
        assert_limited(client_credentials_token(instance.url, (client_id, secret), headers=via(address)), "failed client authentications")
    assert client_credentials_token(pair.a.url, (client_id, secret), headers=via(new_address())).status_code == 200, \
        "counted per client and address: the client itself still works from elsewhere"


# -- sign-in -----------------------------------------------------------------------------------

class BrowserAt(Browser):
    """A browser behind the trusted proxy, at ``address``."""

    def __init__(self, base_url: str, address: str):
        super().__init__(base_url)
        self.address = address

    def request(self, method, url, **kwargs):
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **via(self.address)}
        return super().request(method, url, **kwargs)


def sign_in(instance: RunningInstance, address: str, username: str, password: str, cookies: dict | None = None) -> httpx2.Response:
    browser = BrowserAt(instance.url, address)
    if cookies is not None:
        browser.cookies = cookies
    return submit_sign_in(browser, username, password)


def assert_locked_out(response: httpx2.Response) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert "Too many failed sign-in attempts. Try again in " in response.text
    assert "__Host-gatehouse-session" not in response.headers.get("set-cookie", "")
    return retry_after


def test_failed_sign_ins_lock_the_account_for_that_address_only(pair):
    """Keyed on (account, address): the owner signing in from elsewhere is not locked out."""
    attacker, owner = new_address(), new_address()
    instances = pair.alternate()
    for _ in range(3):
        assert sign_in(next(instances), attacker, "dave", "guess").status_code == 401
    for instance in (pair.b, pair.a):
        retry_after = assert_locked_out(sign_in(instance, attacker, "dave", PASSWORD))
        assert 1 <= retry_after <= int(LIMITS["GATEHOUSE_LOGIN_MAX_LOCKOUT"])
    assert "Try again in " in sign_in(pair.a, attacker, "DAVE", PASSWORD).text, "the account name is not case-sensitive"
    assert sign_in(pair.b, owner, "dave", PASSWORD).status_code == 303


def test_an_account_under_distributed_attack_locks_except_for_browsers_that_signed_in_before(pair):
    """The account-wide cap (8 failures here), and the device cookie that keeps its owner in."""
    owners_browser: dict = {}
    assert sign_in(pair.a, new_address(), "carol", PASSWORD, cookies=owners_browser).status_code == 303
    assert DEVICE_COOKIE in owners_browser
    del owners_browser["__Host-gatehouse-session"]  # the owner signs out; the device cookie stays
    instances = pair.alternate()
    for _ in range(8):  # one failure from each of 8 addresses: no (account, address) limit is reached
        assert sign_in(next(instances), new_address(), "carol", "guess").status_code == 401
    assert_locked_out(sign_in(pair.b, new_address(), "carol", PASSWORD))
    assert sign_in(pair.a, new_address(), "carol", PASSWORD, cookies=owners_browser).status_code == 303
    assert sign_in(pair.b, new_address(), "erin", PASSWORD).status_code == 303, "other accounts are not affected"


def test_failed_sign_ins_per_address_over_many_accounts_are_limited(pair):
    """Password spraying: one guess at each of many accounts from one address (6 here)."""
    sprayer = new_address()
    instances = pair.alternate()
    for n in range(6):
        assert sign_in(next(instances), sprayer, f"sprayed-{n}", "Summer2026!").status_code == 401
    assert_locked_out(sign_in(pair.b, sprayer, "sprayed-6", PASSWORD))
    assert sign_in(pair.a, new_address(), "sprayed-6", PASSWORD).status_code == 303


# -- CIMD fetches ------------------------------------------------------------------------------

def test_client_metadata_fetches_per_host_are_counted_across_instances(pair, loopback_server):
    """AS-5 documents served with no-store: every authorization request fetches one."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def document(request):
        return JSONResponse({"client_id": str(request.url), "client_name": "Fetched app", "redirect_uris": ["http://127.0.0.1:9/cb"],
                             "token_endpoint_auth_method": "none"}, headers={"Cache-Control": "no-store"})

    with loopback_server(Starlette(routes=[Route("/client/{n}.json", document)])) as base_url:
        def authorize(instance, n):
            query = {"response_type": "code", "client_id": f"{base_url}/client/{n}.json", "redirect_uri": "http://127.0.0.1:9/cb",
                     "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
            return httpx2.get(f"{instance.url}/authorize", params=query, headers={"Accept": "text/html"}, timeout=30)

        instances = pair.alternate()
        for n in range(3):
            assert authorize(next(instances), n).status_code == 303  # to the sign-in page: the document was fetched
        for instance in (pair.a, pair.b):
            page = authorize(instance, 99)
            assert page.status_code == 429, page.text
            assert 1 <= int(page.headers["retry-after"]) <= 120
            assert "Try again in " in page.text


# -- an instance that trusts no proxy, with a short lockout ------------------------------------

def test_a_lockout_ends_after_its_window_and_forwarded_for_cannot_escape_it(tmp_path):
    instance = start_gatehouse(None, tmp_path / "data", None, ISSUER, [], {
        "GATEHOUSE_FAILED_LOGIN_PER_MINUTE": "2", "GATEHOUSE_LOGIN_MAX_LOCKOUT": "8",
    })
    try:
        add_user(None, tmp_path / "data", "frank", PASSWORD)
        for _ in range(2):
            assert sign_in(instance, "203.0.113.1", "frank", "guess").status_code == 401
        # a new X-Forwarded-For from a peer nobody trusts is still the same address
        retry_after = assert_locked_out(sign_in(instance, "203.0.113.2", "frank", PASSWORD))
        assert 1 <= retry_after <= 8, "the lockout is bounded by login_max_lockout"
        time.sleep(retry_after)
        assert sign_in(instance, "203.0.113.3", "frank", PASSWORD).status_code == 303
    finally:
        instance.stop()


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(tmp_path):
    instance = start_gatehouse(None, tmp_path / "data", None, ISSUER, [], {"GATEHOUSE_REGISTRATION_RATE_PER_MINUTE": "2"})
    try:
        statuses = [register(instance, f"192.0.2.{n}").status_code for n in range(3)]
        assert statuses == [201, 201, 429], "X-Forwarded-For from an untrusted peer does not make a new address"
    finally:
        instance.stop()
