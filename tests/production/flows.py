"""What the production tests do against a running instance: accounts, clients, grants, sign-ins."""

from __future__ import annotations

from pathlib import Path

import httpx2

from gatehouse.authserver.users import create_user
from gatehouse.config import Settings
from gatehouse.store import db as store_db
from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"


def store_url(database_url: str | None, data_dir: Path) -> str:
    """The URL an instance with these options uses (its SQLite file when no URL is given)."""
    return Settings(database_url=database_url, data_dir=data_dir).effective_database_url


def add_user(database_url: str | None, data_dir: Path, username: str, password: str) -> None:
    """Create a local account straight in the instance's store."""
    engine = store_db.create_store_engine(store_url(database_url, data_dir))
    try:
        with store_db.transaction(store_db.session_factory(engine)) as session:
            create_user(session, username, password)
    finally:
        engine.dispose()


def register_public_client(base_url: str) -> str:
    response = httpx2.post(f"{base_url}/register", json={
        "client_name": "Production test", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
    }, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["client_id"]


def register_machine_client(base_url: str) -> tuple[str, str]:
    response = httpx2.post(f"{base_url}/register", json={
        "client_name": "Production machine", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic",
    }, timeout=30)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["client_id"], body["client_secret"]


def client_credentials_token(base_url: str, client: tuple[str, str], headers: dict | None = None) -> httpx2.Response:
    return httpx2.post(f"{base_url}/token", data={"grant_type": "client_credentials"}, auth=client, headers=headers, timeout=30)


def user_tokens(base_url: str, client_id: str, username: str, password: str) -> tuple[dict, str]:
    """Sign in, consent and redeem the code (authorization code + PKCE): the tokens, and the code."""
    browser = Browser(base_url)
    try:
        verifier, challenge = pkce_pair()
        result = authorize(browser, client_id=client_id, redirect_uri=REDIRECT, challenge=challenge, username=username, password=password)
        assert result.code, result.response.text
    finally:
        browser.close()
    response = httpx2.post(f"{base_url}/token", data={
        "grant_type": "authorization_code", "code": result.code, "client_id": client_id, "redirect_uri": REDIRECT, "code_verifier": verifier,
    }, timeout=30)
    assert response.status_code == 200, response.text
    return response.json(), result.code


def refresh(base_url: str, client_id: str, refresh_token: str) -> httpx2.Response:
    return httpx2.post(f"{base_url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
                       timeout=30)


def submit_sign_in(browser: Browser, username: str, password: str) -> httpx2.Response:
    """Open the sign-in page in ``browser`` and submit its form, as a person would; closes the browser."""
    try:
        page = browser.get("/login")
        assert page.status_code == 200, page.text
        return browser.submit(page, {"username": username, "password": password})
    finally:
        browser.close()


def failed_login(base_url: str, username: str, password: str = "not the password") -> httpx2.Response:
    """Submit the sign-in form with a wrong password, as a browser would."""
    return submit_sign_in(Browser(base_url), username, password)
