"""Redirect URI rules: what may be registered (AS-6, S-C1) and what matches (AS-8, S-A1,
RFC 8252 section 7.3)."""

from __future__ import annotations

import pytest

from gatehouse.authserver.redirects import redirect_uri_matches, redirect_uri_problem

ACCEPTED = [
    "https://app.example.com/callback",
    "https://app.example.com:8443/cb?tenant=1",
    "https://app.example.com",
    "http://127.0.0.1/callback",
    "http://127.0.0.1:51234/callback",
    "http://127.5.6.7/callback",
    "http://[::1]/callback",
    "http://[::1]:8080/callback",
    "http://localhost/callback",
    "http://localhost:3000/callback",
    "com.example.app:/oauth2redirect",
    "com.example.app:/cb",
    "vscode://publisher.extension/callback",
]

REJECTED = {
    "javascript": "javascript:alert(1)",
    "javascript-mixed-case": "JaVaScRiPt:alert(1)",
    "javascript-with-slashes": "javascript://example.com/%0Aalert(1)",
    "data": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "file": "file:///etc/passwd",
    "file-host": "file://server/share",
    "vbscript": "vbscript:msgbox(1)",
    "blob": "blob:https://app.example.com/uuid",
    "about": "about:blank",
    "ftp": "ftp://app.example.com/cb",
    "ws": "ws://127.0.0.1/cb",
    "http-public": "http://app.example.com/callback",
    "http-upper-scheme": "HTTP://app.example.com/callback",
    "http-private-ip": "http://10.0.0.1/callback",
    "http-loopback-lookalike": "http://127.0.0.1.nip.io/callback",
    "http-localhost-lookalike": "http://localhost.attacker.example/callback",
    "fragment": "https://app.example.com/callback#frag",
    "empty-fragment": "https://app.example.com/callback#",
    "loopback-fragment": "http://127.0.0.1/callback#x",
    "userinfo": "https://user:pass@app.example.com/callback",
    "user-only": "https://user@app.example.com/callback",
    "host-confusion": "https://app.example.com@attacker.example/callback",
    "loopback-userinfo": "http://127.0.0.1@attacker.example/callback",
    "relative": "/callback",
    "scheme-relative": "//app.example.com/callback",
    "no-host": "https:///callback",
    "leading-space": " https://app.example.com/callback",
    "inner-newline": "https://app.example.com/call\nback",
    "tab": "https://app.example.com/\tcb",
    "empty": "",
    "bad-ipv6": "https://[::1/callback",
}


@pytest.mark.parametrize("uri", ACCEPTED)
def test_safe_redirect_uris_have_no_problem(uri):
    assert redirect_uri_problem(uri) is None


@pytest.mark.parametrize("uri", list(REJECTED.values()), ids=list(REJECTED))
def test_S_C1_unsafe_redirect_uris_are_refused_with_a_reason(uri):
    problem = redirect_uri_problem(uri)
    assert isinstance(problem, str) and problem


@pytest.mark.parametrize("value", [None, 42, ["https://app.example.com/cb"], {"uri": "https://app.example.com/cb"}, b"https://a.example/cb"])
def test_S_C1_non_strings_are_refused(value):
    assert redirect_uri_problem(value)


def test_reasons_name_the_rule():
    assert "javascript" in redirect_uri_problem("javascript:alert(1)")
    assert "fragment" in redirect_uri_problem("https://a.example/cb#x")
    assert "loopback" in redirect_uri_problem("http://a.example/cb")
    assert "@" in redirect_uri_problem("https://u@a.example/cb") or "user" in redirect_uri_problem("https://u@a.example/cb")


# -- matching ----------------------------------------------------------------------------------

MATCHES = [
    ("https://app.example.com/callback", "https://app.example.com/callback"),
    ("http://127.0.0.1/callback", "http://127.0.0.1:51234/callback"),
    ("http://127.0.0.1:3000/callback", "http://127.0.0.1:51234/callback"),
    ("http://127.0.0.1:3000/callback", "http://127.0.0.1/callback"),
    ("http://[::1]/callback", "http://[::1]:8080/callback"),
    ("http://localhost:3000/callback", "http://localhost:4000/callback"),
    ("http://127.0.0.1:3000/cb?x=1", "http://127.0.0.1:9999/cb?x=1"),
    ("com.example.app:/oauth2redirect", "com.example.app:/oauth2redirect"),
]

MISMATCHES = {
    "extra-path": ("https://app.example.com/callback", "https://app.example.com/callback/extra"),
    "trailing-slash": ("https://app.example.com/callback", "https://app.example.com/callback/"),
    "host-case": ("https://app.example.com/callback", "https://APP.example.com/callback"),
    "scheme-case": ("https://app.example.com/callback", "HTTPS://app.example.com/callback"),
    "added-query": ("https://app.example.com/callback", "https://app.example.com/callback?x=1"),
    "changed-query": ("https://app.example.com/callback?a=1", "https://app.example.com/callback?a=2"),
    "encoded-char": ("https://app.example.com/callback", "https://app.example.com/%63allback"),
    "dot-segments": ("https://app.example.com/callback", "https://app.example.com/x/../callback"),
    "https-port": ("https://app.example.com/callback", "https://app.example.com:8443/callback"),
    "https-default-port": ("https://app.example.com/callback", "https://app.example.com:443/callback"),
    "https-loopback-port": ("https://127.0.0.1/callback", "https://127.0.0.1:8443/callback"),
    "other-host": ("https://app.example.com/callback", "https://attacker.example/callback"),
    "subdomain": ("https://app.example.com/callback", "https://evil.app.example.com/callback"),
    "http-downgrade": ("https://app.example.com/callback", "http://app.example.com/callback"),
    "loopback-other-path": ("http://127.0.0.1/callback", "http://127.0.0.1:5000/other"),
    "loopback-added-query": ("http://127.0.0.1/callback", "http://127.0.0.1:5000/callback?x=1"),
    "loopback-fragment": ("http://127.0.0.1/callback", "http://127.0.0.1:5000/callback#x"),
    "loopback-host-swap": ("http://127.0.0.1/callback", "http://localhost/callback"),
    "loopback-v6-swap": ("http://[::1]/callback", "http://127.0.0.1/callback"),
    "loopback-userinfo": ("http://127.0.0.1/callback", "http://127.0.0.1@attacker.example/callback"),
    "loopback-userinfo-port": ("http://127.0.0.1:3000/callback", "http://x@127.0.0.1:3000/callback"),
    "loopback-host-suffix": ("http://localhost:3000/callback", "http://localhost:3000.attacker.example/callback"),
    "loopback-to-https": ("http://127.0.0.1/callback", "https://127.0.0.1:5000/callback"),
    "non-loopback-http-port": ("http://app.example.com/callback", "http://app.example.com:8080/callback"),
    "private-use-scheme": ("com.example.app:/oauth2redirect", "com.example.app:/oauth2redirect/x"),
    "empty": ("https://app.example.com/callback", ""),
}


@pytest.mark.parametrize(("registered", "requested"), MATCHES)
def test_exact_or_loopback_any_port_matches(registered, requested):
    assert redirect_uri_matches(registered, requested) is True


@pytest.mark.parametrize(("registered", "requested"), list(MISMATCHES.values()), ids=list(MISMATCHES))
def test_S_A1_anything_else_does_not_match(registered, requested):
    assert redirect_uri_matches(registered, requested) is False


def test_malformed_requested_uri_does_not_match():
    assert redirect_uri_matches("http://[::1]/callback", "http://[::1/callback") is False
