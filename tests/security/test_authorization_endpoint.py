"""Security cases of the authorization endpoint (S-A1..S-A9 of shared/spec/security-cases.md).

Everything runs against a real AS on loopback (``live_as``, once per store backend), driven by
the requests a browser would send. "No redirect" means: no ``Location`` header at all, an HTML
page instead, and nothing in that page links to an address the client did not register.
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, unquote_plus, urlencode, urljoin, urlsplit

import httpx2
import pytest
from sqlalchemy import func, select

from gatehouse.store.models import AuthorizationCode, Consent, Grant
from tests.support.browser import Browser, authorize, parse_forms, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"
WEB_REDIRECT = "https://app.example.com/callback"
LOCALHOST_REDIRECT = "http://localhost:8765/callback"
IPV6_REDIRECT = "http://[::1]:7000/callback"
ALL_REDIRECTS = [REDIRECT, WEB_REDIRECT, LOCALHOST_REDIRECT, IPV6_REDIRECT]
STATE = "st-0123"


# -- helpers --

def count(live_as, model, *where) -> int:
    with live_as.ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def authorize_url(**params) -> str:
    return "/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


def code_request(client_id: str, challenge: str, redirect_uri: str | None = REDIRECT, **extra) -> dict:
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": STATE,
    }
    params.update(extra)
    return params


def query_keys(location: str) -> list[str]:
    """Parameter names of a redirect's raw query string, repeats kept."""
    raw = urlsplit(location).query
    return [unquote_plus(part.split("=", 1)[0]) for part in raw.split("&") if part]


def return_link(page: httpx2.Response) -> str | None:
    """The "Return to …" link of an error page, unescaped."""
    match = re.search(r'<a class="button secondary" href="([^"]*)"', page.text)
    return html.unescape(match.group(1)) if match else None


def all_hrefs(page: httpx2.Response) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', page.text)]


def assert_no_redirect(response: httpx2.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")


def assert_csp_no_framing(response: httpx2.Response) -> None:
    directives = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in directives
    assert response.headers["x-frame-options"] == "DENY"


def assert_error_redirect_params(location: str, live_as, error: str, state: str | None = STATE) -> dict:
    keys = query_keys(location)
    params = parse_qs(urlsplit(location).query)
    assert params["error"] == [error], location
    assert keys.count("iss") == 1 and params["iss"] == [live_as.base_url]
    assert "code" not in keys
    if state is None:
        assert "state" not in keys
    else:
        assert keys.count("state") == 1 and params["state"] == [state]
    return params


def expect_untrusted_error(live_as, browser: Browser, query: dict, error: str, redirect_uri: str = REDIRECT) -> None:
    """An error for a client the user has not approved: a page, with the error redirect only as a link."""
    page = browser.get(authorize_url(**query))
    assert_no_redirect(page)
    assert f"<code>{error}</code>" in page.text
    link = return_link(page)
    assert link is not None and link.startswith(redirect_uri + "?")
    assert_error_redirect_params(link, live_as, error, query.get("state"))


def expect_trusted_error(live_as, browser: Browser, query: dict, error: str, redirect_uri: str = REDIRECT) -> None:
    """An error for a client the signed-in user approved: straight back to the client."""
    response = browser.get(authorize_url(**query))
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?")
    assert_error_redirect_params(location, live_as, error, query.get("state"))


def register(live_as, redirect_uris=None, **metadata) -> str:
    return live_as.register(redirect_uris=redirect_uris or [REDIRECT], **metadata)["client_id"]


def approved_browser(live_as, client_id: str, username: str = "alice", redirect_uri: str = REDIRECT) -> Browser:
    """A browser signed in as ``username`` who has approved ``client_id`` once."""
    user, password = live_as.add_user(username)
    browser = Browser(live_as.base_url)
    _, challenge = pkce_pair()
    result = authorize(browser, client_id=client_id, redirect_uri=redirect_uri, challenge=challenge,
                       username=user, password=password, state=STATE)
    assert result.response.status_code == 303 and result.code, result.response.text
    return browser


def signed_in_browser(live_as, username: str = "alice") -> Browser:
    """A browser signed in as ``username`` (who has approved nothing)."""
    user, password = live_as.add_user(username)
    browser = Browser(live_as.base_url)
    page = browser.get("/login?next=/apps")
    response = browser.submit(page, {"username": user, "password": password})
    assert response.status_code == 303, response.text
    return browser


def consent_page(live_as, browser: Browser, query: dict) -> httpx2.Response:
    page = browser.follow(browser.get(authorize_url(**query)))
    assert page.status_code == 200 and 'name="decision"' in page.text, page.text
    return page


def post_form(browser: Browser, page: httpx2.Response, data: dict) -> httpx2.Response:
    form = parse_forms(page.text)[0]
    action = urljoin(str(page.url), form["action"])
    return browser.request("POST", action, content=urlencode(data),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})


# -- S-A1: redirect URI exact match; unknown client --

MISMATCHED_REDIRECTS = {
    "extra-path": WEB_REDIRECT + "/extra",
    "extra-path-loopback": REDIRECT + "/extra",
    "trailing-slash": WEB_REDIRECT + "/",
    "trailing-slash-loopback": REDIRECT + "/",
    "host-case": "https://APP.example.com/callback",
    "host-case-localhost": "http://LocalHost:8765/callback",
    "added-query": WEB_REDIRECT + "?next=1",
    "added-query-loopback": REDIRECT + "?next=1",
    "encoded-path-char": "https://app.example.com/%63allback",
    "encoded-path-char-loopback": "http://127.0.0.1:9/call%62ack",
    "encoded-host-char": "https://app%2Eexample.com/callback",
    "dot-dot-segment": "https://app.example.com/x/../callback",
    "dot-dot-segment-loopback": "http://127.0.0.1:9/x/../callback",
    "dot-segment": "https://app.example.com/./callback",
    "scheme-downgrade": "http://app.example.com/callback",
    "explicit-port": "https://app.example.com:8443/callback",
    "fragment": WEB_REDIRECT + "#x",
    "fragment-loopback": REDIRECT + "#x",
    "userinfo-trick": "https://app.example.com@evil.example/callback",
    "userinfo-trick-loopback": "http://127.0.0.1:9@evil.example/callback",
    "suffix-host": "https://app.example.com.evil.example/callback",
    "other-loopback-address": "http://127.0.0.2:9/callback",
    "attacker": "https://evil.example/callback",
}


@pytest.mark.parametrize("requested", list(MISMATCHED_REDIRECTS.values()), ids=list(MISMATCHED_REDIRECTS))
def test_S_A1_redirect_uri_must_match_exactly(live_as, requested):
    client_id = register(live_as, ALL_REDIRECTS)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge, redirect_uri=requested)

    # before sign-in, and for a signed-in user who already approved this client: never a redirect
    for browser in (Browser(live_as.base_url), approved_browser(live_as, client_id)):
        page = browser.get(authorize_url(**query))
        assert_no_redirect(page)
        assert "<code>invalid_request</code>" in page.text
        assert return_link(page) is None
        assert not any(h.startswith(requested.split("?")[0].split("#")[0]) for h in all_hrefs(page))
    # the only code ever issued is the approved browser's own setup code
    assert count(live_as, AuthorizationCode) == 1
    assert count(live_as, AuthorizationCode, AuthorizationCode.redirect_uri == requested) == 0


@pytest.mark.parametrize(
    "client_id",
    ["no-such-client", "", "https://127.0.0.1:1/missing-document.json", "https://127.0.0.1:1/é.json",
     'https://127.0.0.1:1/"x".json'],
    ids=["unknown", "empty", "unreachable-metadata-document", "metadata-url-non-ascii", "metadata-url-quote"],
)
def test_S_A1_unknown_client_id_gets_error_page(live_as, client_id):
    _, challenge = pkce_pair()
    page = Browser(live_as.base_url).get(authorize_url(**code_request(client_id, challenge)))
    assert_no_redirect(page)
    assert "<code>invalid_client</code>" in page.text
    assert return_link(page) is None
    assert not any(h.startswith(REDIRECT) for h in all_hrefs(page))


def test_S_A1_missing_client_id_gets_error_page(live_as):
    _, challenge = pkce_pair()
    query = code_request("x", challenge)
    del query["client_id"]
    page = Browser(live_as.base_url).get(authorize_url(**query))
    assert_no_redirect(page)
    assert return_link(page) is None


@pytest.mark.parametrize(
    "registered, requested",
    [
        (REDIRECT, "http://127.0.0.1:51234/callback"),
        (LOCALHOST_REDIRECT, "http://localhost:1/callback"),
        (IPV6_REDIRECT, "http://[::1]:60001/callback"),
    ],
    ids=["ipv4", "localhost", "ipv6"],
)
def test_S_A1_loopback_redirect_with_another_port_matches(live_as, registered, requested):
    client_id = register(live_as, [registered])
    username, password = live_as.add_user()
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client_id, redirect_uri=requested, challenge=challenge,
                       username=username, password=password, state=STATE)
    assert result.response.status_code == 303
    assert result.response.headers["location"].startswith(requested + "?")
    assert result.code and result.state == STATE and result.iss == live_as.base_url
    token = live_as.post_token({"grant_type": "authorization_code", "code": result.code, "client_id": client_id,
                                "redirect_uri": requested, "code_verifier": verifier})
    assert token.status_code == 200, token.text


# -- S-A2: PKCE S256 required --

PKCE_VARIANTS = {
    "no-challenge": {"code_challenge": None, "code_challenge_method": None},
    "no-challenge-but-method": {"code_challenge": None},
    "plain": {"code_challenge_method": "plain"},
    "plain-lowercase-s256": {"code_challenge_method": "s256"},
    "unknown-method": {"code_challenge_method": "S512"},
    "missing-method": {"code_challenge_method": None},
    "empty-challenge": {"code_challenge": ""},
    "too-short": {"code_challenge": "a" * 42},
    "too-long": {"code_challenge": "a" * 129},
    "bad-charset-plus-slash": {"code_challenge": "+/" * 22},
    "bad-charset-padding": {"code_challenge": "A" * 42 + "="},
    "bad-charset-space": {"code_challenge": "A" * 21 + " " + "A" * 21},
}


@pytest.mark.parametrize("change", list(PKCE_VARIANTS.values()), ids=list(PKCE_VARIANTS))
def test_S_A2_pkce_s256_required(live_as, change):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge, **change)

    expect_untrusted_error(live_as, Browser(live_as.base_url), query, "invalid_request")
    browser = approved_browser(live_as, client_id)
    codes_before = count(live_as, AuthorizationCode)
    expect_trusted_error(live_as, browser, query, "invalid_request")
    assert count(live_as, AuthorizationCode) == codes_before


def test_S_A2_repeated_challenge_is_refused(live_as):
    client_id = register(live_as)
    _, first = pkce_pair()
    _, second = pkce_pair()
    query = code_request(client_id, first)
    url = authorize_url(**query) + "&" + urlencode({"code_challenge": second})
    page = Browser(live_as.base_url).get(url)
    assert_no_redirect(page)
    assert "<code>invalid_request</code>" in page.text


# -- S-A3: only response_type=code --

@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "code id_token", "", None, "CODE", "tokén", 'to"ken'],
                         ids=["token", "id_token", "code-token", "code-id_token", "empty", "missing", "uppercase", "non-ascii",
                              "quote"])
def test_S_A3_only_response_type_code(live_as, response_type):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge, response_type=response_type)

    expect_untrusted_error(live_as, Browser(live_as.base_url), query, "unsupported_response_type")
    browser = approved_browser(live_as, client_id)
    codes_before = count(live_as, AuthorizationCode)
    response = browser.get(authorize_url(**query))
    assert response.status_code == 302
    location = response.headers["location"]
    assert_error_redirect_params(location, live_as, "unsupported_response_type")
    assert "access_token" not in location and "id_token=" not in location and "#" not in location
    assert count(live_as, AuthorizationCode) == codes_before


def test_S_A3_unsupported_response_type_with_unregistered_redirect_gives_no_link(live_as):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge, response_type="token", redirect_uri="https://evil.example/cb")
    for browser in (Browser(live_as.base_url), approved_browser(live_as, client_id)):
        page = browser.get(authorize_url(**query))
        assert_no_redirect(page)
        assert return_link(page) is None
        assert not any("evil.example" in h for h in all_hrefs(page))


# -- S-A4: iss on every response; code, state and iss once each --

TRICKY_STATE = "s t&iss=https://evil.example&code=stolen;state=x#frag"


def _approve(live_as, browser, client_id, challenge, state, redirect_uri=REDIRECT):
    user, password = live_as.add_user()
    result = authorize(browser, client_id=client_id, redirect_uri=redirect_uri, challenge=challenge,
                       username=user, password=password, state=state)
    assert result.response.status_code == 303
    return result.response.headers["location"]


def _scenario_consent_approved(live_as, client_id, challenge):
    return _approve(live_as, Browser(live_as.base_url), client_id, challenge, TRICKY_STATE), None


def _scenario_already_approved(live_as, client_id, challenge):
    browser = approved_browser(live_as, client_id)
    response = browser.get(authorize_url(**code_request(client_id, challenge, state=TRICKY_STATE)))
    assert response.status_code == 302
    return response.headers["location"], None


def _scenario_denied(live_as, client_id, challenge):
    user, password = live_as.add_user()
    result = authorize(Browser(live_as.base_url), client_id=client_id, redirect_uri=REDIRECT, challenge=challenge,
                       username=user, password=password, state=TRICKY_STATE, decision="deny")
    assert result.response.status_code == 303
    return result.response.headers["location"], "access_denied"


def _scenario_trusted_request_error(live_as, client_id, challenge):
    browser = approved_browser(live_as, client_id)
    response = browser.get(authorize_url(**code_request(client_id, challenge, state=TRICKY_STATE, scope="admin")))
    assert response.status_code == 302
    return response.headers["location"], "invalid_scope"


def _scenario_prompt_none_signed_out(live_as, client_id, challenge):
    """Signed out, the client is not yet trusted: no auto-redirect (S-A9), the page links back."""
    page = Browser(live_as.base_url).get(authorize_url(**code_request(client_id, challenge, state=TRICKY_STATE, prompt="none")))
    assert_no_redirect(page)
    return return_link(page), "login_required"


def _scenario_prompt_none_trusted(live_as, client_id, challenge):
    user, password = live_as.add_user()
    browser = Browser(live_as.base_url)
    approved = authorize(browser, client_id=client_id, redirect_uri=REDIRECT, challenge=challenge,
                         username=user, password=password, scope="notes:read")
    assert approved.code
    # a scope the user never approved: consent would be needed, and prompt=none forbids asking
    response = browser.get(authorize_url(**code_request(client_id, challenge, state=TRICKY_STATE, prompt="none",
                                                        scope="notes:write")))
    assert response.status_code == 302
    return response.headers["location"], "consent_required"


def _scenario_untrusted_error_page(live_as, client_id, challenge):
    page = Browser(live_as.base_url).get(authorize_url(**code_request(client_id, challenge, state=TRICKY_STATE, scope="admin")))
    assert_no_redirect(page)
    return return_link(page), "invalid_scope"


S_A4_SCENARIOS = {
    "consent-approved": _scenario_consent_approved,
    "already-approved": _scenario_already_approved,
    "consent-denied": _scenario_denied,
    "trusted-request-error": _scenario_trusted_request_error,
    "prompt-none-signed-out": _scenario_prompt_none_signed_out,
    "prompt-none-trusted": _scenario_prompt_none_trusted,
    "untrusted-error-page-link": _scenario_untrusted_error_page,
}


@pytest.mark.parametrize("scenario", list(S_A4_SCENARIOS.values()), ids=list(S_A4_SCENARIOS))
def test_S_A4_every_response_carries_iss_once(live_as, scenario):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    location, error = scenario(live_as, client_id, challenge)
    assert location and location.startswith(REDIRECT + "?")
    assert urlsplit(location).fragment == ""
    keys = query_keys(location)
    params = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert keys.count("iss") == 1 and params["iss"] == [live_as.base_url]
    assert keys.count("state") == 1 and params["state"] == [TRICKY_STATE]
    if error is None:
        assert keys.count("code") == 1 and len(params["code"][0]) >= 22
        assert "error" not in keys
    else:
        assert "code" not in keys
        assert keys.count("error") == 1 and params["error"] == [error]
    assert len(keys) == len(set(keys)), keys


def test_S_A4_registered_query_is_kept_and_parameters_appear_once(live_as):
    registered = "http://127.0.0.1:9/callback?app=notes"
    client_id = register(live_as, [registered])
    _, challenge = pkce_pair()
    location = _approve(live_as, Browser(live_as.base_url), client_id, challenge, "abc", redirect_uri=registered)
    keys = query_keys(location)
    assert sorted(keys) == ["app", "code", "iss", "state"]
    params = parse_qs(urlsplit(location).query)
    assert params["app"] == ["notes"] and params["state"] == ["abc"] and params["iss"] == [live_as.base_url]


def test_S_A4_no_state_sent_means_no_state_returned(live_as):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge, scope="admin")
    del query["state"]
    page = Browser(live_as.base_url).get(authorize_url(**query))
    link = return_link(page)
    assert link is not None
    assert_error_redirect_params(link, live_as, "invalid_scope", state=None)


# -- S-A5: bad resource → invalid_target --

def _bad_resources(live_as):
    return {
        "relative": "/mcp",
        "relative-no-slash": "mcp",
        "scheme-relative": "//127.0.0.1/mcp",
        "with-fragment": live_as.resource + "#section",
        "not-served": "https://other.example/mcp",
        "other-path-same-host": live_as.base_url + "/other",
        "not-a-uri": "urn:example:mcp",
        "non-ascii": "https://other.example/é",
        "quote": 'https://other.example/"x"',
        "backslash": "https://other.example/a\\b",
    }


@pytest.mark.parametrize("kind", ["relative", "relative-no-slash", "scheme-relative", "with-fragment", "not-served",
                                  "other-path-same-host", "not-a-uri", "non-ascii", "quote",
                                  "backslash", "two-resources"])
def test_S_A5_bad_resource_is_invalid_target(live_as, kind):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge)
    if kind == "two-resources":
        url = authorize_url(**query) + "&" + urlencode([("resource", live_as.resource), ("resource", "https://other.example/mcp")])
    else:
        url = authorize_url(**query, resource=_bad_resources(live_as)[kind])

    page = Browser(live_as.base_url).get(url)
    assert_no_redirect(page)
    assert "<code>invalid_target</code>" in page.text
    assert_error_redirect_params(return_link(page), live_as, "invalid_target")

    browser = approved_browser(live_as, client_id)
    codes_before = count(live_as, AuthorizationCode)
    response = browser.get(url)
    assert response.status_code == 302
    assert_error_redirect_params(response.headers["location"], live_as, "invalid_target")
    assert count(live_as, AuthorizationCode) == codes_before


def test_S_A5_served_resource_is_accepted(live_as):
    client_id = register(live_as)
    username, password = live_as.add_user()
    _, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client_id, redirect_uri=REDIRECT, challenge=challenge,
                       username=username, password=password, resource=live_as.resource)
    assert result.code
    with live_as.ctx.sessions() as session:
        assert session.scalar(select(AuthorizationCode.resource)) == live_as.resource


# -- S-A6: anti-framing headers; no CORS --

def test_S_A6_login_consent_and_error_pages_forbid_framing(live_as):
    client_id = register(live_as)
    username, password = live_as.add_user()
    _, challenge = pkce_pair()
    browser = Browser(live_as.base_url)

    to_login = browser.get(authorize_url(**code_request(client_id, challenge)))
    assert to_login.status_code == 303
    assert_csp_no_framing(to_login)
    login = browser.get(to_login.headers["location"])
    assert login.status_code == 200 and 'name="password"' in login.text
    assert_csp_no_framing(login)

    wrong = browser.submit(login, {"username": username, "password": "wrong"})
    assert wrong.status_code == 401
    assert_csp_no_framing(wrong)

    consent = browser.follow(browser.submit(login, {"username": username, "password": password}))
    assert consent.status_code == 200 and 'name="decision"' in consent.text
    assert_csp_no_framing(consent)

    csrf_failure = post_form(browser, consent, {"decision": "approve"})
    assert csrf_failure.status_code == 403
    assert_csp_no_framing(csrf_failure)

    pages = [
        browser.get(authorize_url(**code_request("no-such-client", challenge))),
        browser.get(authorize_url(**code_request(client_id, challenge, redirect_uri="https://evil.example/cb"))),
        Browser(live_as.base_url).get(authorize_url(**code_request(client_id, challenge, scope="admin"))),
    ]
    for page in pages:
        assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
        assert_csp_no_framing(page)

    approved = browser.submit(consent, button=("decision", "approve"))
    assert approved.status_code == 303
    assert_csp_no_framing(approved)


def test_S_A6_no_cors_headers_on_authorize(live_as):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    origin = {"Origin": "https://evil.example"}
    anonymous = Browser(live_as.base_url)
    approved = approved_browser(live_as, client_id)
    fresh = signed_in_browser(live_as, "bob")
    responses = {
        "to-login": anonymous.get(authorize_url(**code_request(client_id, challenge)), headers=origin),
        "error-page": anonymous.get(authorize_url(**code_request("nope", challenge)), headers=origin),
        "request-error-page": anonymous.get(authorize_url(**code_request(client_id, challenge, scope="admin")), headers=origin),
        "consent-page": fresh.get(authorize_url(**code_request(client_id, challenge)), headers=origin),
        "code-redirect": approved.get(authorize_url(**code_request(client_id, challenge)), headers=origin),
        "consent-post": anonymous.request(
            "POST", authorize_url(**code_request(client_id, challenge)), content="decision=approve",
            headers={**origin, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        "preflight": httpx2.options(
            f"{live_as.base_url}{authorize_url(**code_request(client_id, challenge))}",
            headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
        ),
    }
    assert responses["consent-page"].status_code == 200
    assert responses["code-redirect"].status_code == 302
    for name, response in responses.items():
        assert response.status_code < 500, name
        cors = [h for h in response.headers if h.lower().startswith("access-control-")]
        assert cors == [], (name, cors)
    assert responses["preflight"].status_code in (400, 403, 405)


# -- S-A7: consent POST needs the CSRF token of this user, session and client --

def test_S_A7_consent_post_without_valid_csrf_is_refused(live_as):
    client_a = register(live_as, client_name="App A")
    client_b = register(live_as, client_name="App B")
    username, password = live_as.add_user("alice")
    _, challenge = pkce_pair()
    query_a = code_request(client_a, challenge)
    query_b = code_request(client_b, challenge)

    alice = Browser(live_as.base_url)
    page_a = alice.follow(alice.get(authorize_url(**query_a)))
    page_a = alice.follow(alice.submit(page_a, {"username": username, "password": password}))
    assert 'name="decision"' in page_a.text
    csrf_a = parse_forms(page_a.text)[0]["fields"]["csrf_token"]
    csrf_b = parse_forms(consent_page(live_as, alice, query_b).text)[0]["fields"]["csrf_token"]
    assert csrf_a != csrf_b

    bob = signed_in_browser(live_as, "bob")
    bob_page_a = consent_page(live_as, bob, query_a)

    attempts = {
        "missing": (alice, page_a, {"decision": "approve"}),
        "missing-deny": (alice, page_a, {"decision": "deny"}),
        "empty": (alice, page_a, {"decision": "approve", "csrf_token": ""}),
        "forged": (alice, page_a, {"decision": "approve", "csrf_token": "0" * 64}),
        "other-client": (alice, page_a, {"decision": "approve", "csrf_token": csrf_b}),
        "other-user": (bob, bob_page_a, {"decision": "approve", "csrf_token": csrf_a}),
    }
    for name, (browser, page, data) in attempts.items():
        response = post_form(browser, page, data)
        assert response.status_code == 403, (name, response.status_code)
        assert "location" not in response.headers, name
        assert "code=" not in response.text, name

    assert count(live_as, Consent) == 0
    assert count(live_as, AuthorizationCode) == 0
    assert count(live_as, Grant) == 0

    # the genuine form still works: the refusals above were about the token, nothing else
    approved = alice.submit(page_a, button=("decision", "approve"))
    assert approved.status_code == 303 and "code=" in approved.headers["location"]
    assert count(live_as, Consent) == 1 and count(live_as, AuthorizationCode) == 1


# -- S-A8: answers to form posts are 303 --

def test_S_A8_login_and_consent_posts_answer_303(live_as):
    client_id = register(live_as)
    username, password = live_as.add_user()
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge)

    browser = Browser(live_as.base_url)
    login = browser.follow(browser.get(authorize_url(**query)))
    signed_in = browser.submit(login, {"username": username, "password": password})
    assert signed_in.status_code == 303
    assert urlsplit(signed_in.headers["location"]).path == "/authorize"

    consent = browser.follow(signed_in)
    denied = browser.submit(consent, button=("decision", "deny"))
    assert denied.status_code == 303 and denied.headers["location"].startswith(REDIRECT + "?")
    assert parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]

    consent = consent_page(live_as, browser, query)
    approved = browser.submit(consent, button=("decision", "approve"))
    assert approved.status_code == 303 and "code=" in approved.headers["location"]

    # a consent POST from a signed-out browser goes to sign-in, also with 303
    signed_out = Browser(live_as.base_url).request(
        "POST", authorize_url(**query), content="decision=approve",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert signed_out.status_code == 303 and urlsplit(signed_out.headers["location"]).path == "/login"


# -- S-A9: no automatic redirect to a client the user has not approved --

@pytest.mark.parametrize("scope", ["notes:read admin", "notes:read é", 'notes:read "x"', "notes:read a\\b"],
                         ids=["unregistered", "non-ascii", "quote", "backslash"])
def test_S_A9_invalid_scope_before_login_does_not_redirect(live_as, scope):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    query = code_request(client_id, challenge, scope=scope)

    expect_untrusted_error(live_as, Browser(live_as.base_url), query, "invalid_scope")

    # signed in, but this client was never approved (another one was): still no redirect
    other = register(live_as, client_name="Another app")
    browser = approved_browser(live_as, other, "carol")
    expect_untrusted_error(live_as, browser, query, "invalid_scope")

    # once the user approved the client, the error goes straight back to it
    trusted = approved_browser(live_as, client_id, "dave")
    expect_trusted_error(live_as, trusted, query, "invalid_scope")


def test_S_A9_denial_before_login_does_not_redirect(live_as):
    client_id = register(live_as)
    _, challenge = pkce_pair()
    response = Browser(live_as.base_url).request(
        "POST", authorize_url(**code_request(client_id, challenge)), content="decision=deny",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert urlsplit(location).path == "/login" and not urlsplit(location).netloc
    assert not location.startswith(REDIRECT)
