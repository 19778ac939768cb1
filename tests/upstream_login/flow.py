"""A person signing in to Gatehouse through an upstream provider, played with plain HTTP.

Gatehouse's cookies are ``__Host-`` and ``Secure`` on http://127.0.0.1, which Python's cookie jars
refuse, so the Gatehouse side is :class:`tests.support.browser.Browser` (cookies by hand); the
upstream side is an ``httpx2.Client`` with its own jar (the provider's session cookie, which
makes a second sign-in there skip the login form).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2

from tests.support.browser import Browser, parse_forms, pkce_pair
from tests.upstream.browser_steps import sign_in_upstream

REDIRECT = "http://127.0.0.1:9/callback"


class Person:
    def __init__(self, gatehouse_url: str):
        self.gatehouse = Browser(gatehouse_url)
        self.upstream = httpx2.Client(timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.gatehouse.close()
        self.upstream.close()

    def new_gatehouse_browser(self) -> None:
        """Forget Gatehouse's cookies only (the upstream session stays)."""
        self.gatehouse.close()
        self.gatehouse = Browser(self.gatehouse.base_url)


@dataclass
class Request:
    client_id: str
    verifier: str
    challenge: str
    state: str
    redirect_uri: str = REDIRECT

    @property
    def path(self) -> str:
        return "/authorize?" + urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
            "code_challenge": self.challenge, "code_challenge_method": "S256", "state": self.state,
        })


def new_request(client_id: str) -> Request:
    verifier, challenge = pkce_pair()
    return Request(client_id, verifier, challenge, "st-" + secrets.token_hex(4))


def upstream_button(page: httpx2.Response, name: str) -> str:
    """The URL the login page's button for upstream ``name`` opens (a GET form)."""
    forms = [f for f in parse_forms(page.text) if f["method"] == "get" and f["action"].endswith(f"/login/upstream/{name}")]
    assert len(forms) == 1, page.text
    return f"{forms[0]['action']}?{urlencode(forms[0]['fields'])}"


def login_page(person: Person, request: Request) -> httpx2.Response:
    """``/authorize`` without a session: the login page it sends the browser to."""
    page = person.gatehouse.follow(person.gatehouse.get(request.path))
    assert page.status_code == 200 and urlsplit(str(page.url)).path == "/login", page.text[:500]
    return page


def consent_before_upstream(person: Person, request: Request, name: str = "google") -> httpx2.Response:
    """The consent page shown before the upstream redirect: straight from ``/authorize`` when the
    upstream is the only way to sign in, else through the login page's button."""
    consent = person.gatehouse.follow(person.gatehouse.get(request.path))
    if urlsplit(str(consent.url)).path == "/login":
        consent = person.gatehouse.get(upstream_button(consent, name))
    assert consent.status_code == 200 and 'name="decision"' in consent.text, consent.text[:800]
    return consent


def answer(person: Person, consent: httpx2.Response, decision: str = "approve") -> httpx2.Response:
    return person.gatehouse.submit(consent, button=("decision", decision))


def to_upstream(person: Person, request: Request, name: str = "google") -> str:
    """Authorize → login page → "Continue with ..." → consent → Allow: the upstream URL."""
    response = answer(person, consent_before_upstream(person, request, name))
    assert response.status_code == 303, response.text[:800]
    return response.headers["location"]


def at_upstream(person: Person, url: str, account, callback: str) -> str:
    """Sign in at the provider; the callback URL it sends the browser back to (not fetched)."""
    login = getattr(account, "username", None) or account.login
    return sign_in_upstream(person.upstream, url, login, account.password, until=callback)


def sign_in(person: Person, request: Request, account, callback: str, name: str = "google") -> httpx2.Response:
    """The whole upstream sign-in; Gatehouse's answer to the callback (normally 303 to the client)."""
    return person.gatehouse.get(at_upstream(person, to_upstream(person, request, name), account, callback))


def redirect_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), f"{response.status_code}: {response.text[:800]}"
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def redeem(base_url: str, request: Request, code: str) -> dict:
    response = httpx2.post(f"{base_url}/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": request.redirect_uri,
        "client_id": request.client_id, "code_verifier": request.verifier,
    }, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def form_index(page: httpx2.Response, action: str) -> int:
    """The index of the page's one form that posts to ``action``."""
    found = [i for i, form in enumerate(parse_forms(page.text)) if form["action"] == action]
    assert len(found) == 1, page.text
    return found[0]
