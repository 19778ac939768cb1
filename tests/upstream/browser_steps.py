"""A person at an upstream sign-in page, played with httpx2: follow redirects, fill the login form.

The upstream OpenID Provider (oidc-provider) and the GitHub stand-in both show a form with the
fields ``login`` and ``password``; ``sign_in_upstream`` fills it and stops at the first redirect
to ``until`` (the client's redirect URI), which it returns without fetching.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import httpx2

FORM_ACTION = re.compile(r'<form[^>]*\baction="([^"]+)"', re.IGNORECASE)


class UpstreamSignInFailed(AssertionError):
    pass


def sign_in_upstream(client: httpx2.Client, url: str, login: str, password: str, *, until: str,
                     max_steps: int = 12) -> str:
    """The redirect URL (starting with ``until``) the upstream sends the browser back to."""
    submitted = False
    method, data = "GET", None
    for _ in range(max_steps):
        response = client.request(method, url, data=data, follow_redirects=False)
        location = response.headers.get("location")
        if response.is_redirect and location:
            target = urljoin(url, location)
            if target.startswith(until):
                return target
            url, method, data = target, "GET", None
            continue
        match = FORM_ACTION.search(response.text) if response.status_code == 200 else None
        if match is None or submitted:
            raise UpstreamSignInFailed(f"{method} {url} answered {response.status_code}: {response.text[:500]}")
        url, method, data = urljoin(url, html.unescape(match.group(1))), "POST", {
            "login": login, "password": password}
        submitted = True
    raise UpstreamSignInFailed(f"no redirect to {until} after {max_steps} steps (last: {url})")
