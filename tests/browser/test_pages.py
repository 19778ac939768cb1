"""The login, consent, connected-apps and error pages, driven in headless Chromium (AS-16, S-A6..S-A8).

Each test runs once per store backend. Full-page screenshots land in ``tests/browser/screenshots/``
(git-ignored) as ``<page>-<store>.png`` for a person to look at.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.support.browser import pkce_pair

try:
    from playwright.sync_api import expect
except ImportError:  # the ``chromium`` fixture reports the missing component
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.store]

SESSION_COOKIE = "__Host-gatehouse-session"
PHONE = {"viewport": {"width": 375, "height": 667}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


# -- helpers --


@pytest.fixture
def callback(loopback_server):
    """The client's redirect URI: a real page on another loopback origin, so the browser lands."""

    async def landed(request):
        return HTMLResponse("<!doctype html><title>Notes Desktop</title><h1>Back in the app</h1>")

    with loopback_server(Starlette(routes=[Route("/callback", landed)])) as base:
        yield f"{base}/callback"


def path_is(method: str, path: str):
    return lambda response: response.request.method == method and urlsplit(response.url).path == path


def query_of(url: str) -> dict[str, str]:
    params = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in params.values()), url
    return {k: v[0] for k, v in params.items()}


def authorize_url(live_as, client_id: str, redirect_uri: str, challenge: str, state: str, scope: str = "notes:read") -> str:
    return f"{live_as.base_url}/authorize?" + urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "code_challenge": challenge,
         "code_challenge_method": "S256", "state": state, "scope": scope, "resource": live_as.resource}
    )


def assert_not_frameable(response) -> None:
    """S-A6: the page forbids every framing ancestor, in both the CSP and the legacy header."""
    headers = response.headers  # Playwright lower-cases header names
    directives = [d.strip() for d in headers.get("content-security-policy", "").split(";")]
    assert "frame-ancestors 'none'" in directives, headers
    assert headers.get("x-frame-options") == "DENY", headers
    assert "access-control-allow-origin" not in headers


def sign_in(page, username: str, password: str):
    """Fill and submit the login form; returns (the POST's response, the page it leads to)."""
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_response(path_is("POST", "/login")) as posted, page.expect_navigation() as landed:
        page.get_by_role("button", name="Sign in").click()
    return posted.value, landed.value


def open_consent(page, live_as, client_id, redirect_uri, challenge, state, username, password):
    """Start an authorization request, sign in, and stop on the consent page (its response)."""
    login = page.goto(authorize_url(live_as, client_id, redirect_uri, challenge, state))
    assert login.status == 200 and urlsplit(page.url).path == "/login"
    posted, consent = sign_in(page, username, password)
    assert posted.status == 303  # S-A8
    assert consent.status == 200 and urlsplit(consent.url).path == "/authorize"
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    return login, consent


def answer(page, decision: str, callback: str) -> tuple[int, dict[str, str]]:
    """Click Allow or Deny; returns the POST's status and the query the client's callback received."""
    with page.expect_response(path_is("POST", "/authorize")) as answered:
        page.get_by_role("button", name=decision, exact=True).click()
    page.wait_for_url(lambda url: url.startswith(callback + "?"))
    expect(page.get_by_role("heading", name="Back in the app")).to_be_visible()
    return answered.value.status, query_of(page.url)


def redeem(live_as, client_id, code, redirect_uri, verifier) -> dict:
    token = live_as.post_token(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
         "code_verifier": verifier, "resource": live_as.resource}
    )
    assert token.status_code == 200, token.text
    return token.json()


def assert_answers_side_by_side(page) -> None:
    """Deny and Allow sit on one row with the same size, so neither looks like the default."""
    deny = page.get_by_role("button", name="Deny", exact=True).bounding_box()
    allow = page.get_by_role("button", name="Allow", exact=True).bounding_box()
    assert abs(deny["y"] - allow["y"]) < 1 and abs(deny["height"] - allow["height"]) < 1, (deny, allow)
    assert abs(deny["width"] - allow["width"]) < 1 and deny["x"] + deny["width"] <= allow["x"], (deny, allow)


def no_horizontal_scroll(page, width: int) -> None:
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width, f"{page.url} scrolls sideways: {scroll_width}px > {width}px"


# -- tests --


def test_sign_in_and_allow(live_as, page, callback, screenshot):
    username, password = live_as.add_user()
    client = live_as.register(client_name="Notes Desktop", redirect_uris=[callback])
    verifier, challenge = pkce_pair()

    login = page.goto(authorize_url(live_as, client["client_id"], callback, challenge, "st-allow"))
    assert login.status == 200 and urlsplit(page.url).path == "/login"
    assert_not_frameable(login)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "login")

    posted, consent = sign_in(page, username, password)
    assert posted.status == 303  # S-A8
    assert consent.status == 200 and urlsplit(consent.url).path == "/authorize"
    assert_not_frameable(consent)
    session = {c["name"]: c for c in page.context.cookies()}[SESSION_COOKIE]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/"

    expect(page.get_by_role("heading", level=1)).to_have_text("Allow Notes Desktop to use your account?")
    expect(page.locator(".scopes li")).to_have_text(["Read your notes"])
    expect(page.locator("dl.facts")).to_contain_text(urlsplit(callback).netloc)
    expect(page.locator("dl.facts")).to_contain_text(client["client_id"])
    expect(page.locator(".brand")).to_contain_text(f"Signed in as {username}")
    assert_answers_side_by_side(page)
    screenshot(page, "consent")

    status, params = answer(page, "Allow", callback)
    assert status == 303  # S-A8
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "st-allow" and params["iss"] == live_as.base_url

    tokens = redeem(live_as, client["client_id"], params["code"], callback, verifier)
    assert tokens["token_type"].lower() == "bearer" and tokens["access_token"] and tokens["scope"] == "notes:read"


def test_deny_returns_access_denied(live_as, page, callback):
    username, password = live_as.add_user()
    client = live_as.register(client_name="Notes Desktop", redirect_uris=[callback])
    verifier, challenge = pkce_pair()
    open_consent(page, live_as, client["client_id"], callback, challenge, "st-deny", username, password)

    status, params = answer(page, "Deny", callback)
    assert status == 303
    assert params["error"] == "access_denied"
    assert params["state"] == "st-deny" and params["iss"] == live_as.base_url
    assert "code" not in params


def test_connected_apps_remove_access(live_as, page, callback, screenshot):
    username, password = live_as.add_user()
    client = live_as.register(client_name="Notes Desktop", redirect_uris=[callback])
    verifier, challenge = pkce_pair()
    open_consent(page, live_as, client["client_id"], callback, challenge, "st-apps", username, password)
    _, params = answer(page, "Allow", callback)
    tokens = redeem(live_as, client["client_id"], params["code"], callback, verifier)
    refreshed = live_as.post_token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client["client_id"]})
    assert refreshed.status_code == 200, refreshed.text  # the refresh token works before removal
    refresh_token = refreshed.json()["refresh_token"]

    apps = page.goto(f"{live_as.base_url}/apps")
    assert apps.status == 200
    expect(page.get_by_role("heading", name="Connected apps")).to_be_visible()
    entry = page.locator(".apps > li", has_text="Notes Desktop")
    expect(entry).to_have_count(1)
    expect(entry.locator(".scopes li")).to_have_text(["Read your notes"])
    screenshot(page, "apps")

    with page.expect_response(path_is("POST", "/apps/revoke")) as posted:
        entry.get_by_role("button", name="Remove access for Notes Desktop").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/apps" and "removed=1" in url)
    assert posted.value.status == 303
    expect(page.get_by_role("status")).to_have_text("Access removed.")
    expect(page.locator(".apps > li")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("Notes Desktop")
    screenshot(page, "apps-after-revoke")

    after = live_as.post_token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant", after.text


def test_wrong_password(live_as, page, screenshot):
    username, _ = live_as.add_user()
    login = page.goto(f"{live_as.base_url}/login")
    assert login.status == 200

    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("not the password")
    with page.expect_response(path_is("POST", "/login")) as posted:
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    response = posted.value
    assert response.status == 401
    assert_not_frameable(response)
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value(username)
    expect(page.get_by_label("Password")).to_have_value("")
    assert SESSION_COOKIE not in {c["name"] for c in page.context.cookies()}
    screenshot(page, "login-error")

    page.goto(f"{live_as.base_url}/apps")  # no session: back to the login page
    assert urlsplit(page.url).path == "/login"
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_pages_cannot_be_framed(live_as, page, callback, loopback_server):
    username, password = live_as.add_user()
    client = live_as.register(client_name="Notes Desktop", redirect_uris=[callback])
    _, challenge = pkce_pair()
    consent_url = authorize_url(live_as, client["client_id"], callback, challenge, "st-frame")
    error_url = authorize_url(live_as, "no-such-client", callback, challenge, "st-frame")

    for url in (f"{live_as.base_url}/login", error_url):
        assert_not_frameable(page.goto(url))

    async def framer(request):
        src = request.query_params["src"].replace('"', "&quot;")
        return HTMLResponse(f'<!doctype html><title>framer</title><iframe id="target" src="{src}" width="600" height="500"></iframe>')

    def assert_refused(attacker: str, url: str, marker: str) -> None:
        with page.expect_response(lambda r: r.url == url) as fetched:
            page.goto(f"{attacker}/frame?" + urlencode({"src": url}))
        assert fetched.value.status in (200, 400)  # the AS answered; the browser must refuse to show it
        assert_not_frameable(fetched.value)
        frame = page.locator("#target").element_handle().content_frame()
        assert not frame.url.startswith(live_as.base_url), f"{url} was framed"
        assert marker not in frame.content(), f"{url} rendered inside a frame"

    # another origin (other port) that the browser visits
    with loopback_server(Starlette(routes=[Route("/frame", framer)])) as attacker:
        page.goto(f"{attacker}/frame?" + urlencode({"src": f"{live_as.base_url}/static/gatehouse.css"}))
        control = page.locator("#target").element_handle().content_frame()
        assert control.url.endswith("/static/gatehouse.css") and ":root" in control.content()  # framing works at all

        assert_refused(attacker, f"{live_as.base_url}/login", 'name="password"')
        assert_refused(attacker, error_url, "cannot be used")
        open_consent(page, live_as, client["client_id"], callback, challenge, "st-frame", username, password)
        assert_refused(attacker, consent_url, 'name="decision"')
        assert_refused(attacker, f"{live_as.base_url}/apps", "Remove access")


@pytest.mark.parametrize("client_name", ["Notes for Phones", "Notes-for-Phones-with-an-Unusually-Long-Unbroken-Name-Example"])
def test_phone_viewport(live_as, new_context, callback, screenshot, client_name):
    username, password = live_as.add_user()
    client = live_as.register(client_name=client_name, redirect_uris=[callback])
    _, challenge = pkce_pair()
    page = new_context(**PHONE).new_page()
    width = PHONE["viewport"]["width"]
    long_name = "Long" in client_name

    page.goto(authorize_url(live_as, client["client_id"], callback, challenge, "st-phone"))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    no_horizontal_scroll(page, width)
    if not long_name:
        screenshot(page, "mobile-login")

    posted, consent = sign_in(page, username, password)
    assert consent.status == 200
    no_horizontal_scroll(page, width)
    allow = page.get_by_role("button", name="Allow")
    allow.scroll_into_view_if_needed()
    expect(allow).to_be_visible()
    expect(allow).to_be_in_viewport(ratio=0.9)  # sub-pixel rounding at the edge
    box = allow.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= width and box["height"] >= 40  # a finger-sized target
    assert_answers_side_by_side(page)
    screenshot(page, "mobile-consent-long-name" if long_name else "mobile-consent")


def test_unknown_client_error_page(live_as, page, callback, screenshot):
    _, challenge = pkce_pair()
    response = page.goto(authorize_url(live_as, "no-such-client", callback, challenge, "st-err"))
    assert response.status == 400
    assert_not_frameable(response)
    assert response.headers["content-type"].startswith("text/html")
    assert urlsplit(page.url).path == "/authorize"  # an unknown client never gets a redirect (S-A1)

    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link cannot be used")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    message = alert.inner_text().strip()
    assert len(message) > 10 and not message.startswith("{") and "Traceback" not in page.content()
    expect(page.locator("main")).to_contain_text("invalid_client")
    screenshot(page, "error")
