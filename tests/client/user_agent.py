"""The user's browser, stood in for by a program that ``webbrowser`` starts through ``BROWSER``.

It is given the authorization URL, signs in like a person with tests/support/browser.py's
HTTP user agent (login form, consent page), and follows the final redirect to the client's
loopback listener. Its behaviour comes from the environment, set by the ``user_agent`` fixture:

- ``GATEHOUSE_TEST_UA_LOG``: a file of what happened, one line each: ``open <url>``, and
  ``answered <status> <page title>`` for the page the client's listener showed at the end;
- ``GATEHOUSE_TEST_UA_MODE``: ``approve`` (default), ``deny``, ``ignore`` (a closed browser), or
  ``forge-then-approve`` (first sends the listener an answer with another state, as an attacker
  would, and logs ``forged <status> <page title>``);
- ``GATEHOUSE_TEST_UA_USERNAME`` / ``GATEHOUSE_TEST_UA_PASSWORD``: the account to sign in with.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2

from tests.support.browser import Browser


def sign_in(url: str, mode: str, username: str | None, password: str | None) -> httpx2.Response | None:
    parts = urlsplit(url)
    browser = Browser(f"{parts.scheme}://{parts.netloc}")
    try:
        response = browser.follow(browser.get(url))
        if response.status_code == 200 and 'name="password"' in response.text:
            response = browser.follow(browser.submit(response, {"username": username, "password": password}))
        if response.status_code == 200 and 'name="decision"' in response.text:
            response = browser.submit(response, button=("decision", "deny" if mode == "deny" else "approve"))
        location = response.headers.get("location")
        if location is None:
            return response
        return httpx2.get(urljoin(str(response.url), location), timeout=10)
    finally:
        browser.close()


def forge_answer(url: str) -> str:
    """Send the client's listener an answer that is not for its request; describe what it said."""
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    page = httpx2.get(f"{redirect_uri}?{urlencode({'code': 'forged-code', 'state': 'forged-state'})}", timeout=10)
    return f"forged {page.status_code} {title_of(page)}"


def title_of(page: httpx2.Response) -> str:
    title = re.search(r"<title>(.*?)</title>", page.text)
    return title.group(1) if title else ""


def main(url: str) -> int:
    log_path = os.environ["GATEHOUSE_TEST_UA_LOG"]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"open {url}\n")
    mode = os.environ.get("GATEHOUSE_TEST_UA_MODE", "approve")
    if mode == "ignore":
        return 0
    if mode == "forge-then-approve":
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(forge_answer(url) + "\n")
    page = sign_in(url, mode, os.environ.get("GATEHOUSE_TEST_UA_USERNAME"), os.environ.get("GATEHOUSE_TEST_UA_PASSWORD"))
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"answered {page.status_code} {title_of(page)}\n" if page is not None else "answered nothing\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
