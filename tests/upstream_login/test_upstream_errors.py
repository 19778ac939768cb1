"""When the upstream is down, answers with an error, or the user gives up there: a page that says
what happened and what to do, the way back to the app with an OAuth error, never a 500."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from tests.upstream_login.conftest import google_config
from tests.upstream_login.flow import Person, answer, at_upstream, consent_before_upstream, new_request, redirect_params, to_upstream


@pytest.fixture
def person(federated):
    someone = Person(federated.base_url)
    yield someone
    someone.close()


def back_to_app(page) -> dict[str, str]:
    """The error page's link back to the app, as query parameters."""
    match = re.search(r'<a class="button secondary" href="([^"]*)"', page.text)
    assert match, page.text[:1500]
    return {k: v[0] for k, v in parse_qs(urlsplit(html.unescape(match.group(1))).query).items()}


def assert_page(page, status: int, code: str, *phrases: str) -> None:
    assert page.status_code == status, page.text[:1500]
    assert page.headers["content-type"].startswith("text/html") and "location" not in page.headers
    assert f"<code>{code}</code>" in page.text
    text = html.unescape(page.text)
    for phrase in phrases:
        assert phrase in text, text[:2000]
    assert "Traceback" not in text


def test_upstream_down_at_sign_in(federated, google, person):
    google.stop()
    request = new_request(federated.register()["client_id"])
    page = answer(person, consent_before_upstream(person, request))
    assert_page(page, 502, "upstream_unreachable", "Google cannot be reached", "Try again in a few minutes")
    back = back_to_app(page)
    assert (back["error"], back["state"], back["iss"]) == ("temporarily_unavailable", request.state, federated.base_url)
    google.start()
    assert to_upstream(person, new_request(request.client_id)).startswith(google.authorization_endpoint)


def test_upstream_down_at_the_callback(federated, google, gatehouse, person):
    request = new_request(federated.register()["client_id"])
    callback = at_upstream(person, to_upstream(person, request), google.account("alice"), gatehouse.callback("google"))
    google.stop()
    page = person.gatehouse.get(callback)
    assert_page(page, 502, "upstream_unreachable", "could not connect to Google")
    assert "set-cookie" not in page.headers
    assert back_to_app(page)["error"] == "temporarily_unavailable"


def test_user_cancels_at_the_upstream_and_the_client_gets_access_denied(federated, google, gatehouse, person):
    request = new_request(federated.register()["client_id"])
    url = to_upstream(person, request)
    for _ in range(5):  # to the provider's login page
        response = person.upstream.get(url)
        if not response.is_redirect:
            break
        url = urljoin(url, response.headers["location"])
    assert "/interaction/" in url, url
    url = urljoin(url, urlsplit(url).path + "/abort")
    while not url.startswith(gatehouse.callback("google")):
        url = urljoin(url, person.upstream.get(url).headers["location"])
    assert "error=access_denied" in url
    params = redirect_params(person.gatehouse.get(url))
    assert (params["error"], params["state"], params["iss"]) == ("access_denied", request.state, federated.base_url)
    assert "code" not in params and not google.token_requests


@pytest.mark.parametrize(
    ("failure", "status", "code", "phrase", "client_error"),
    [
        (503, 502, "upstream_unavailable", "answered with an error (HTTP 503)", "temporarily_unavailable"),
        ("invalid_grant", 502, "upstream_refused", "Google refused to finish the sign-in (invalid_grant)", "server_error"),
    ],
)
def test_token_endpoint_errors(federated, google, gatehouse, person, failure, status, code, phrase, client_error):
    request = new_request(federated.register()["client_id"])
    callback = at_upstream(person, to_upstream(person, request), google.account("alice"), gatehouse.callback("google"))
    google.fail_token_endpoint(failure)
    page = person.gatehouse.get(callback)
    assert_page(page, status, code, phrase)
    assert back_to_app(page)["error"] == client_error


def test_an_upstream_error_answer_is_explained(federated, google, person):
    request = new_request(federated.register()["client_id"])
    state = parse_qs(urlsplit(to_upstream(person, request)).query)["state"][0]
    page = person.gatehouse.get(f"/login/upstream/google/callback?error=temporarily_unavailable&state={state}"
                                "&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert_page(page, 502, "upstream_temporarily_unavailable", "Google answered with the error temporarily_unavailable")
    assert "<script>" not in page.text and "alert(1)" not in page.text
    assert back_to_app(page)["error"] == "temporarily_unavailable"


def test_a_discovery_document_for_another_issuer_is_refused(gatehouse, google):
    live = gatehouse.start([google_config(google, issuer=google.issuer + "/")])
    someone = Person(live.base_url)
    try:
        page = answer(someone, consent_before_upstream(someone, new_request(live.register()["client_id"])))
    finally:
        someone.close()
    assert_page(page, 502, "upstream_misconfigured", "Google is not set up correctly", f"not the configured '{google.issuer}/'")
