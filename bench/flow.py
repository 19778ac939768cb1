"""Client side of the OAuth authorization-code flow, driven the way a browser drives it.

Self-contained (standard library only) so tests can reuse it with any HTTP client: everything
goes through a *transport*, an object with::

    async def request(method, url, headers=None, body=b"") -> response

where the response has ``status``, ``body`` (bytes), ``header(name)`` and
``header_values(name)``. Redirects are never followed by the transport: this module follows
them itself, so every 303 of the login/consent dance is seen.

The flow (see :meth:`AuthCodeFlow.authorize`)::

    GET /authorize?...            -> 303 to the login page (unless the session is logged in)
    GET login page                -> 200 HTML form: username, password, hidden CSRF field(s)
    POST the form to its action   -> 303 back to /authorize
    GET /authorize?...            -> 200 consent form (decision=approve, hidden fields) or,
                                     once consent is remembered, straight to redirect_uri
    POST the consent form         -> 303 to redirect_uri?code=..&state=..&iss=..

Cookies are kept by :class:`CookieJar` by hand: the server's cookies are ``__Host-`` prefixed
and ``Secure``, which standard cookie jars refuse to send over plain http.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

__all__ = [
    "AuthCodeFlow",
    "AuthorizationResult",
    "CookieJar",
    "Endpoints",
    "FlowError",
    "HtmlForm",
    "basic_auth",
    "discover",
    "form_body",
    "parse_forms",
    "pkce_pair",
    "register_client",
]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FORM_CONTENT_TYPE = ("Content-Type", "application/x-www-form-urlencoded")
JSON_CONTENT_TYPE = ("Content-Type", "application/json")
BROWSER_ACCEPT = ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")


class FlowError(Exception):
    """The server answered something the flow did not expect."""


class ResponseLike(Protocol):
    status: int
    body: bytes

    def header(self, name: str) -> str | None: ...

    def header_values(self, name: str) -> list[str]: ...


class Transport(Protocol):
    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> ResponseLike: ...


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, S256 code_challenge)`` pair (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def form_body(fields: Iterable[tuple[str, str]] | dict[str, str]) -> bytes:
    """``application/x-www-form-urlencoded`` encoding of ``fields``."""
    items = fields.items() if isinstance(fields, dict) else fields
    return urlencode(list(items)).encode("ascii")


def basic_auth(client_id: str, client_secret: str) -> tuple[str, str]:
    """The ``Authorization: Basic`` header for a client (RFC 6749 section 2.3.1 encoding)."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Authorization", "Basic " + base64.b64encode(raw.encode()).decode("ascii")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def snippet(response: ResponseLike, limit: int = 300) -> str:
    """The start of a response body, for error messages."""
    text = response.body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "")


def json_body(response: ResponseLike, what: str) -> dict[str, Any]:
    """Decode a JSON object body or raise :class:`FlowError` naming ``what``."""
    try:
        data = json.loads(response.body)
    except ValueError as exc:
        raise FlowError(f"{what}: HTTP {response.status}, not JSON: {snippet(response)}") from exc
    if not isinstance(data, dict):
        raise FlowError(f"{what}: HTTP {response.status}, JSON is not an object")
    return data


# --------------------------------------------------------------------------------------------
# Cookies
# --------------------------------------------------------------------------------------------


class CookieJar:
    """Name/value cookies for a single origin, kept by hand (``Secure`` and ``__Host-`` included).

    Attributes other than ``Max-Age=0``/``Expires`` in the past (deletion) are ignored: the
    benchmark talks to one host and every cookie it gets is meant to be sent back.
    """

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def update_from(self, response: ResponseLike) -> None:
        """Store (or delete) the cookies of every ``Set-Cookie`` header of ``response``."""
        for line in response.header_values("set-cookie"):
            pair, _, attributes = line.partition(";")
            name, sep, value = pair.partition("=")
            if not sep:
                continue
            name, value = name.strip(), value.strip()
            if _is_deletion(attributes):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> tuple[str, str] | None:
        """The ``Cookie`` request header, or ``None`` when the jar is empty."""
        if not self.cookies:
            return None
        return "Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())


def _is_deletion(attributes: str) -> bool:
    """Whether a ``Set-Cookie`` line's attributes expire the cookie right away."""
    for attribute in attributes.split(";"):
        key, _, value = attribute.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "max-age":
            try:
                return int(value) <= 0
            except ValueError:
                continue
        if key == "expires":
            try:
                expires = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if expires <= datetime.now(UTC):
                return True
    return False


# --------------------------------------------------------------------------------------------
# HTML forms
# --------------------------------------------------------------------------------------------


@dataclass
class HtmlForm:
    """A ``<form>``: its action and method, its successful controls, and its submit buttons."""

    action: str = ""
    method: str = "get"
    fields: list[tuple[str, str]] = field(default_factory=list)
    input_types: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)

    def has_input(self, input_type: str) -> bool:
        return input_type in self.input_types.values()

    def has_button(self, name: str, value: str) -> bool:
        return (name, value) in self.buttons

    def submission(self, values: dict[str, str], button: tuple[str, str] | None = None) -> list[tuple[str, str]]:
        """The fields to post: the form's own values with ``values`` substituted or added,
        followed by the chosen submit ``button`` (name, value), if any."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, value in self.fields:
            if name in values:
                if name in seen:
                    continue
                value = values[name]
            seen.add(name)
            out.append((name, value))
        out.extend((name, value) for name, value in values.items() if name not in seen)
        if button is not None:
            out.append(button)
        return out


class _FormParser(HTMLParser):
    """Collects every form's controls the way a browser would submit them."""

    SUBMIT_TYPES = frozenset({"submit", "image"})
    SKIPPED_TYPES = frozenset({"button", "reset", "file"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HtmlForm] = []
        self._form: HtmlForm | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = HtmlForm(action=a.get("action", ""), method=a.get("method", "get").lower())
            self.forms.append(self._form)
        elif self._form is None or "disabled" in a:
            return
        elif tag == "input":
            self._input(a)
        elif tag == "button":
            if a.get("type", "submit").lower() == "submit" and "name" in a:
                self._form.buttons.append((a["name"], a.get("value", "")))
        elif tag == "textarea" and "name" in a:
            self._textarea = (a["name"], [])

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            name, parts = self._textarea
            self._form.fields.append((name, "".join(parts)))
            self._form.input_types[name] = "textarea"
            self._textarea = None

    def _input(self, a: dict[str, str]) -> None:
        assert self._form is not None
        input_type = a.get("type", "text").lower()
        name = a.get("name")
        if not name or input_type in self.SKIPPED_TYPES:
            return
        if input_type in self.SUBMIT_TYPES:
            self._form.buttons.append((name, a.get("value", "")))
            return
        self._form.input_types[name] = input_type
        if input_type in ("checkbox", "radio"):
            if "checked" in a:
                self._form.fields.append((name, a.get("value", "on")))
            return
        self._form.fields.append((name, a.get("value", "")))


def parse_forms(html: str) -> list[HtmlForm]:
    """Every ``<form>`` of an HTML page, with its controls (hidden ones included)."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


# --------------------------------------------------------------------------------------------
# Discovery and registration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """The authorization server's endpoints (from RFC 8414 metadata, or the usual paths)."""

    issuer: str
    authorization: str
    token: str
    registration: str
    jwks: str

    @property
    def default_resource(self) -> str:
        """The MCP resource served next to the issuer: ``<issuer>/mcp``."""
        return self.issuer.rstrip("/") + "/mcp"


async def discover(transport: Transport, base_url: str) -> Endpoints:
    """Read ``/.well-known/oauth-authorization-server``; fall back to ``/authorize`` etc."""
    base = base_url.rstrip("/")
    response = await transport.request("GET", base + "/.well-known/oauth-authorization-server")
    meta = json_body(response, "metadata") if response.status == 200 else {}
    return Endpoints(
        issuer=str(meta.get("issuer", base)),
        authorization=str(meta.get("authorization_endpoint", base + "/authorize")),
        token=str(meta.get("token_endpoint", base + "/token")),
        registration=str(meta.get("registration_endpoint", base + "/register")),
        jwks=str(meta.get("jwks_uri", base + "/jwks")),
    )


async def register_client(transport: Transport, registration_url: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Dynamic client registration (RFC 7591); returns the server's client information."""
    response = await transport.request(
        "POST", registration_url, [JSON_CONTENT_TYPE], json.dumps(metadata).encode("utf-8")
    )
    info = json_body(response, "registration")
    if response.status != 201 or "client_id" not in info:
        raise FlowError(f"registration: HTTP {response.status}: {snippet(response)}")
    return info


# --------------------------------------------------------------------------------------------
# The authorization-code flow
# --------------------------------------------------------------------------------------------


@dataclass
class AuthorizationResult:
    """What came back to the redirect URI, plus what the token request will need."""

    code: str
    state: str
    iss: str | None
    code_verifier: str
    requests: int
    logged_in: bool
    consented: bool


@dataclass
class AuthCodeFlow:
    """Drives ``/authorize`` through login and consent to a code, and exchanges codes/tokens.

    One instance per (client, user); pass a :class:`CookieJar` to :meth:`authorize` to keep a
    browser session across flows (the second flow then skips the login).
    """

    endpoints: Endpoints
    client_id: str
    redirect_uri: str
    username: str = ""
    password: str = ""
    scope: str | None = None
    resource: str | None = None
    max_steps: int = 12
    check_iss: bool = True

    def authorization_url(self, state: str, challenge: str) -> str:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
        }
        if self.resource:
            params["resource"] = self.resource
        if self.scope:
            params["scope"] = self.scope
        return self.endpoints.authorization + "?" + urlencode(params)

    async def authorize(self, transport: Transport, jar: CookieJar | None = None) -> AuthorizationResult:
        """Run the browser part of the flow until the server redirects to ``redirect_uri``."""
        jar = jar if jar is not None else CookieJar()
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        method, url, body = "GET", self.authorization_url(state, challenge), b""
        logged_in = consented = False
        for step in range(1, self.max_steps + 1):
            response = await self._send(transport, jar, method, url, body)
            if response.status in REDIRECT_STATUSES:
                location = urljoin(url, response.header("location") or "")
                if self._is_redirect_uri(location):
                    return self._result(location, state, verifier, step, logged_in, consented)
                if response.status not in (307, 308):
                    method, body = "GET", b""
                url = location
                continue
            if response.status != 200:
                raise FlowError(f"{method} {url}: HTTP {response.status}: {snippet(response)}")
            form, values, button, kind = self._next_form(response, url, logged_in)
            logged_in |= kind == "login"
            consented |= kind == "consent"
            method, url, body = self._submit(form, url, values, button)
        raise FlowError(f"no redirect to {self.redirect_uri} after {self.max_steps} requests")

    async def exchange_code(self, transport: Transport, result: AuthorizationResult) -> dict[str, Any]:
        """POST the code (with its PKCE verifier) to the token endpoint; returns the token JSON."""
        fields = {
            "grant_type": "authorization_code",
            "code": result.code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": result.code_verifier,
        }
        if self.resource:
            fields["resource"] = self.resource
        return await self.token_request(transport, fields)

    async def refresh(self, transport: Transport, refresh_token: str) -> dict[str, Any]:
        """A refresh_token grant (public client); returns the token JSON."""
        fields = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": self.client_id}
        return await self.token_request(transport, fields)

    async def token_request(self, transport: Transport, fields: dict[str, str]) -> dict[str, Any]:
        response = await transport.request("POST", self.endpoints.token, [FORM_CONTENT_TYPE], form_body(fields))
        tokens = json_body(response, "token")
        if response.status != 200 or "access_token" not in tokens:
            raise FlowError(f"token ({fields['grant_type']}): HTTP {response.status}: {snippet(response)}")
        return tokens

    # -- internals -----------------------------------------------------------------------------

    async def _send(self, transport: Transport, jar: CookieJar, method: str, url: str, body: bytes) -> ResponseLike:
        headers = [BROWSER_ACCEPT]
        cookie = jar.header()
        if cookie:
            headers.append(cookie)
        if method == "POST":
            headers += [FORM_CONTENT_TYPE, ("Origin", origin_of(url)), ("Sec-Fetch-Site", "same-origin")]
        response = await transport.request(method, url, headers, body)
        jar.update_from(response)
        return response

    @staticmethod
    def _submit(
        form: HtmlForm, page_url: str, values: dict[str, str], button: tuple[str, str] | None
    ) -> tuple[str, str, bytes]:
        """The (method, url, body) a browser sends when ``form`` is submitted."""
        action = urljoin(page_url, form.action or page_url)
        fields = form_body(form.submission(values, button))
        if form.method == "get":
            return "GET", action.split("?", 1)[0] + "?" + fields.decode("ascii"), b""
        return "POST", action, fields

    def _is_redirect_uri(self, location: str) -> bool:
        return location.split("?", 1)[0].split("#", 1)[0] == self.redirect_uri

    def _next_form(
        self, response: ResponseLike, url: str, logged_in: bool
    ) -> tuple[HtmlForm, dict[str, str], tuple[str, str] | None, str]:
        """Pick the login or the consent form of a page and what to post with it."""
        forms = parse_forms(response.body.decode("utf-8", "replace"))
        for form in forms:
            if form.has_input("password"):
                if logged_in:
                    raise FlowError(f"login rejected (login form shown again at {url}): {snippet(response)}")
                return form, {"username": self.username, "password": self.password}, None, "login"
        for form in forms:
            if form.has_button("decision", "approve"):
                return form, {}, ("decision", "approve"), "consent"
        raise FlowError(f"GET {url}: page has neither a login nor a consent form: {snippet(response)}")

    def _result(
        self, location: str, state: str, verifier: str, requests: int, logged_in: bool, consented: bool
    ) -> AuthorizationResult:
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        if "error" in query:
            raise FlowError(f"authorization error: {query['error']}: {query.get('error_description', '')}")
        if query.get("state") != state:
            raise FlowError(f"state mismatch in redirect: {location}")
        if "code" not in query:
            raise FlowError(f"no code in redirect: {location}")
        iss = query.get("iss")
        if self.check_iss and iss is not None and iss.rstrip("/") != self.endpoints.issuer.rstrip("/"):
            raise FlowError(f"iss {iss!r} is not the issuer {self.endpoints.issuer!r} (RFC 9207)")
        return AuthorizationResult(query["code"], state, iss, verifier, requests, logged_in, consented)
