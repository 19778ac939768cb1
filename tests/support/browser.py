"""A user agent made of plain HTTP requests: what a browser sends, nothing more.

Cookies are kept by hand because Python cookie jars refuse ``Secure`` cookies over plain
http, while browsers accept them on loopback (a secure context).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2


class FormParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": a.get("method", "get").lower(), "fields": {}, "buttons": []}
            self.forms.append(self._current)
        elif self._current is not None and tag == "input" and a.get("name"):
            self._current["fields"][a["name"]] = a.get("value", "")
        elif self._current is not None and tag == "button" and a.get("name"):
            self._current["buttons"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[dict]:
    parser = FormParser()
    parser.feed(html)
    return parser.forms


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Browser:
    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.http = httpx2.Client(follow_redirects=False, timeout=30)

    def close(self):
        self.http.close()

    def _absorb(self, response: httpx2.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            pair = header.split(";", 1)[0]
            name, _, value = pair.partition("=")
            if "max-age=0" in header.lower() or 'expires=thu, 01 jan 1970' in header.lower():
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value.strip().strip('"')

    def request(self, method: str, url: str, **kwargs) -> httpx2.Response:
        url = urljoin(self.base_url + "/", url)
        headers = dict(kwargs.pop("headers", {}) or {})
        headers.setdefault("Accept", "text/html")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(method, url, headers=headers, **kwargs)
        self._absorb(response)
        return response

    def get(self, url: str, **kwargs) -> httpx2.Response:
        return self.request("GET", url, **kwargs)

    def submit(self, page: httpx2.Response, fields: dict | None = None, button: tuple[str, str] | None = None, form_index: int = 0):
        form = parse_forms(page.text)[form_index]
        data = {**form["fields"], **(fields or {})}
        if button:
            data[button[0]] = button[1]
        action = urljoin(str(page.url), form["action"]) if form["action"] else str(page.url)
        return self.request(
            "POST", action, content=urlencode(data), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )

    def follow(self, response: httpx2.Response, limit: int = 10) -> httpx2.Response:
        """Follow redirects while they stay on the AS; stop at one that leaves it (to the client)."""
        for _ in range(limit):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            location = urljoin(str(response.url), response.headers["location"])
            if not location.startswith(self.base_url + "/"):
                return response
            response = self.get(location)
        raise AssertionError("too many redirects")


def redirect_params(response: httpx2.Response) -> dict[str, list[str]]:
    return parse_qs(urlsplit(response.headers["location"]).query)


@dataclass
class AuthorizationResult:
    code: str | None
    state: str | None
    iss: str | None
    response: httpx2.Response
    params: dict


def authorize(
    browser: Browser,
    *,
    client_id: str,
    redirect_uri: str,
    challenge: str,
    username: str | None = None,
    password: str | None = None,
    decision: str = "approve",
    scope: str | None = None,
    resource: str | None = None,
    state: str | None = "st-" + secrets.token_hex(4),
    extra: dict | None = None,
) -> AuthorizationResult:
    """Run /authorize like a person: log in if asked, answer the consent page if shown."""
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
             "code_challenge": challenge, "code_challenge_method": "S256"}
    if state is not None:
        query["state"] = state
    if scope:
        query["scope"] = scope
    if resource:
        query["resource"] = resource
    query.update(extra or {})
    response = browser.follow(browser.get("/authorize?" + urlencode(query)))
    if response.status_code == 200 and 'name="password"' in response.text:
        response = browser.submit(response, {"username": username, "password": password})
        response = browser.follow(response)
    if response.status_code == 200 and 'name="decision"' in response.text:
        response = browser.submit(response, button=("decision", decision))
    params = redirect_params(response) if "location" in response.headers else {}
    one = lambda k: params.get(k, [None])[0]  # noqa: E731
    return AuthorizationResult(one("code"), one("state"), one("iss"), response, params)
