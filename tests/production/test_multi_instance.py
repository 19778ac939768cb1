"""Stateless instances (issue 7): real ``gatehouse serve`` processes sharing one store and secret.

- Two instances on one PostgreSQL database, one ``--issuer``, different ports: every step of a
  sign-in alternates between them and the code is redeemed on the other; a refresh token from A
  is rotated by B; replaying the old one on A revokes the grant for both (AS-13); a key rotated
  with ``gatehouse keys rotate`` is published by both and its tokens verify (AS-12).
- Two instances started at the same moment on one fresh SQLite data dir: one secret, one first
  key, and each continues the other's flow.
- ``gatehouse serve --workers 2``: both worker processes answer, and a flow whose every step is
  sent to the other worker completes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from itertools import cycle
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import anyio
import httpx2
import pytest
from joserfc import jws

from gatehouse.guard import JWKSKeySource, JWTVerifier
from tests.production.flows import REDIRECT, add_user, refresh, register_machine_client, register_public_client
from tests.production.harness import high_rate_limits_env, run_gatehouse
from tests.support.browser import Browser, parse_forms, pkce_pair

ISSUER = "https://auth.gatehouse.test"  # the one public URL; the instances listen on loopback ports
USERNAME, PASSWORD = "alice", "correct horse battery staple"


def start_together(start: Callable, count: int, **options) -> list:
    """Start ``count`` instances at the same moment (each in its own thread), as a deployment does."""
    started: list = [None] * count
    failures: list = []

    def one(n):
        try:
            started[n] = start(**{k: (v(n) if callable(v) else v) for k, v in options.items()})
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    if failures:
        raise failures[0]
    return started


# -- a sign-in whose steps each go where a step source says ------------------------------------

def post_form(browser: Browser, page: httpx2.Response, fields: dict | None = None, button: tuple[str, str] | None = None):
    """Submit the page's form through ``browser`` (which may talk to another instance than the page came from)."""
    form = parse_forms(page.text)[0]
    data = {**form["fields"], **(fields or {})}
    if button:
        data[button[0]] = button[1]
    target = urlsplit(urljoin(str(page.url), form["action"] or str(page.url)))
    path = target.path + (f"?{target.query}" if target.query else "")
    return browser.request("POST", path, content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"})


def sign_in_across(steps: Iterator[Browser], client_id: str, username: str = USERNAME, password: str = PASSWORD) -> tuple[str, str]:
    """Authorize, log in and consent, each request made by the next browser of ``steps``
    (all sharing one cookie jar); returns the code and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "state": "s-1",
                       "code_challenge": challenge, "code_challenge_method": "S256", "scope": "notes:read"})
    to_login = next(steps).get(f"/authorize?{query}")
    assert to_login.status_code == 303, to_login.text
    login_page = next(steps).get(to_login.headers["location"])
    assert login_page.status_code == 200 and 'name="password"' in login_page.text
    signed_in = post_form(next(steps), login_page, {"username": username, "password": password})
    assert signed_in.status_code == 303, signed_in.text
    consent_page = next(steps).get(signed_in.headers["location"])
    assert consent_page.status_code == 200 and 'name="decision"' in consent_page.text, consent_page.text
    approved = post_form(next(steps), consent_page, button=("decision", "approve"))
    assert approved.status_code == 303, approved.text
    location = approved.headers["location"]
    assert location.startswith(REDIRECT)
    params = parse_qs(urlsplit(location).query)
    assert params["iss"] == [ISSUER] and params["state"] == ["s-1"]
    return params["code"][0], verifier


def browsers_for(urls: list[str]) -> list[Browser]:
    """One browser per instance, sharing one cookie jar: one person's browser, whichever instance answers."""
    browsers = [Browser(url) for url in urls]
    for browser in browsers[1:]:
        browser.cookies = browsers[0].cookies
    return browsers


def code_across(urls: list[str], client_id: str) -> tuple[str, str]:
    """:func:`sign_in_across` with one person's browsers on ``urls``, taking turns."""
    browsers = browsers_for(urls)
    try:
        return sign_in_across(cycle(browsers), client_id)
    finally:
        for browser in browsers:
            browser.close()


def redeem(base_url: str, client_id: str, code: str, verifier: str) -> httpx2.Response:
    return httpx2.post(f"{base_url}/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                                  "redirect_uri": REDIRECT, "code_verifier": verifier}, timeout=30)


def kid_of(token: str) -> str:
    return jws.extract_compact(token.encode()).headers()["kid"]


def published_kids(base_url: str) -> set[str]:
    return {key["kid"] for key in httpx2.get(f"{base_url}/jwks", timeout=30).json()["keys"]}


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.25)


# -- two instances, one PostgreSQL database ----------------------------------------------------

@pytest.fixture
def two_instances(tmp_path, postgres_url, secret_key, start_gatehouse):
    instances = start_together(
        start_gatehouse, 2, database_url=postgres_url, data_dir=lambda n: tmp_path / f"instance-{'ab'[n]}", secret_key=secret_key,
        issuer=ISSUER, env=high_rate_limits_env(),
    )
    add_user(postgres_url, tmp_path / "instance-a", USERNAME, PASSWORD)
    return instances


def test_a_flow_started_on_one_instance_finishes_on_the_other(two_instances):
    a, b = two_instances
    client_id = register_public_client(a.url)
    code, verifier = code_across([a.url, b.url], client_id)
    tokens = redeem(b.url, client_id, code, verifier)
    assert tokens.status_code == 200, tokens.text
    assert redeem(a.url, client_id, code, verifier).json()["error"] == "invalid_grant", "a code is single-use on every instance (AS-11)"


def test_refresh_rotation_and_reuse_detection_span_instances(two_instances):
    """AS-13: A issues, B rotates; the rotated-out token replayed on A revokes the grant for both."""
    a, b = two_instances
    client_id = register_public_client(b.url)
    code, verifier = code_across([a.url], client_id)
    issued_by_a = redeem(a.url, client_id, code, verifier).json()
    rotated_by_b = refresh(b.url, client_id, issued_by_a["refresh_token"])
    assert rotated_by_b.status_code == 200, rotated_by_b.text
    newest = rotated_by_b.json()["refresh_token"]
    assert newest != issued_by_a["refresh_token"]

    replayed_on_a = refresh(a.url, client_id, issued_by_a["refresh_token"])
    assert replayed_on_a.status_code == 400 and replayed_on_a.json()["error"] == "invalid_grant", replayed_on_a.text
    for instance in (b, a):
        after = refresh(instance.url, client_id, newest)
        assert after.status_code == 400 and after.json()["error"] == "invalid_grant", "the whole grant is revoked, everywhere"


def test_a_key_rotated_through_one_instance_is_served_and_used_by_both(two_instances, secret_key, postgres_url):
    """AS-12: ``gatehouse keys rotate`` with instance A's configuration; both publish the key, and
    tokens either signs with it verify against either one's JWKS."""
    a, b = two_instances
    machine = register_machine_client(a.url)
    old_kids = published_kids(a.url)
    assert published_kids(b.url) == old_kids and len(old_kids) == 1, "one first key, though both started at once"

    rotated = run_gatehouse(["keys", "rotate", "--activation-delay", "0", "--data-dir", str(a.data_dir)],
                            database_url=postgres_url, secret_key=secret_key)
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split("New key", 1)[1].split()[0]
    assert new_kid not in old_kids

    for instance in (a, b):  # each instance reloads its key ring from the store every few seconds
        wait_for(lambda: published_kids(instance.url) == old_kids | {new_kid}, what=f"{instance.url} publishing {new_kid}")

    tokens: dict[str, str] = {}

    def signs_with_new_key(instance) -> bool:
        response = httpx2.post(f"{instance.url}/token", data={"grant_type": "client_credentials"}, auth=machine, timeout=30)
        assert response.status_code == 200, response.text
        tokens[instance.url] = response.json()["access_token"]
        return kid_of(tokens[instance.url]) == new_kid

    for instance in (a, b):
        wait_for(lambda: signs_with_new_key(instance), what=f"{instance.url} signing with {new_kid}")

    async def verify(token: str, jwks_of: str):
        verifier = JWTVerifier(issuers=[ISSUER], audience=f"{ISSUER}/mcp", keys=JWKSKeySource(f"{jwks_of}/jwks"))
        return await verifier.verify(token)

    for signer, token in tokens.items():
        for jwks_of in (a.url, b.url):
            caller = anyio.run(verify, token, jwks_of)
            assert caller.client_id == machine[0], f"a token from {signer} verifies with the keys of {jwks_of}"


# -- one fresh SQLite data dir, two processes at once ------------------------------------------

def test_instances_starting_together_on_one_sqlite_data_dir_share_secret_key_and_flows(tmp_path, start_gatehouse):
    """The start-up lock: migrations, secret.key and the first key are made once, whoever is first."""
    data_dir = tmp_path / "shared"
    a, b = start_together(start_gatehouse, 2, database_url=None, data_dir=data_dir, secret_key=None, issuer=ISSUER,
                          env=high_rate_limits_env())
    assert (data_dir / "secret.key").is_file()
    assert published_kids(a.url) == published_kids(b.url) and len(published_kids(a.url)) == 1
    add_user(None, data_dir, USERNAME, PASSWORD)
    client_id = register_public_client(b.url)
    code, verifier = code_across([b.url, a.url], client_id)
    assert redeem(a.url, client_id, code, verifier).status_code == 200


# -- serve --workers 2 -------------------------------------------------------------------------

def parent_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def worker_of(response: httpx2.Response) -> int:
    return int(response.headers["gatehouse-worker"])


def browser_on_worker(base_url: str, worker: int, cookies: dict, tries: int = 300) -> Browser:
    """A browser whose single keep-alive connection is served by ``worker``: a fresh connection
    is opened until that worker accepts one (the kernel hands connections to either)."""
    for _ in range(tries):
        browser = Browser(base_url)
        browser.http.close()
        browser.http = httpx2.Client(limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1), timeout=30,
                                     follow_redirects=False)
        if worker_of(browser.http.get(f"{base_url}/healthz")) == worker:
            browser.cookies = cookies
            return browser
        browser.close()
    raise AssertionError(f"worker {worker} accepted none of {tries} connections")


@pytest.fixture
def two_workers(tmp_path, start_gatehouse):
    instance = start_gatehouse(None, tmp_path / "data", None, issuer=ISSUER, extra_args=["--workers", "2"],
                               env={**high_rate_limits_env(), "GATEHOUSE_WORKER_HEADER": "true"}, timeout=120)
    add_user(None, tmp_path / "data", USERNAME, PASSWORD)
    workers: set[int] = set()
    for _ in range(400):
        with httpx2.Client(timeout=30) as fresh_connection:
            workers.add(worker_of(fresh_connection.get(f"{instance.url}/healthz")))
        if len(workers) == 2:
            break
    return instance, sorted(workers)


def test_serve_with_two_workers_answers_from_both_processes(two_workers):
    instance, workers = two_workers
    assert len(workers) == 2, f"only worker {workers} answered"
    assert instance.pid not in workers
    assert all(parent_pid(worker) == instance.pid for worker in workers), "the workers are processes of one gatehouse serve"


def test_a_flow_alternating_between_workers_completes(two_workers):
    instance, workers = two_workers
    assert len(workers) == 2
    client_id = register_public_client(instance.url)
    cookies: dict = {}
    used: list[Browser] = []

    def alternate() -> Iterator[Browser]:
        for worker in cycle(workers):
            used.append(browser_on_worker(instance.url, worker, cookies))
            yield used[-1]

    try:
        code, verifier = sign_in_across(alternate(), client_id)
        redeemed_by = browser_on_worker(instance.url, workers[1], cookies)
        used.append(redeemed_by)
        tokens = redeemed_by.http.post(f"{instance.url}/token", data={
            "grant_type": "authorization_code", "code": code, "client_id": client_id, "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        })
    finally:
        for browser in used:
            browser.close()
    assert worker_of(tokens) == workers[1]
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["refresh_token"]
