"""Opening the authorization URL in the user's browser, safely (CL-15, S-CL4).

Only ``https`` URLs, or ``http`` on a loopback host, are ever opened; ``javascript:``,
``data:``, ``file:``, ``vbscript:`` and every other scheme are refused before anything runs.
The browser is started through Python's ``webbrowser`` module, so ``BROWSER`` is honoured, and
``webbrowser`` starts programs without a shell. It runs in a daemon thread: a ``BROWSER``
program may keep running until the flow ends (``webbrowser`` waits for it), and the event loop
never waits on it.
"""

from __future__ import annotations

import os
import sys
import threading
import webbrowser
from collections.abc import Callable
from urllib.parse import urlsplit

from gatehouse.client.errors import AuthorizationFailed
from gatehouse.netguard import is_loopback_host


def check_browser_url(url: str) -> None:
    """Raise ``AuthorizationFailed`` unless ``url`` is safe to hand to a browser (CL-15)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise AuthorizationFailed("refused to open the authorization URL: it contains spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https" and parts.hostname:
        return
    if scheme == "http" and is_loopback_host(parts.hostname):
        return
    if scheme == "http":
        raise AuthorizationFailed(
            f"refused to open the authorization URL: plain http is only allowed on loopback, not {parts.hostname}"
        )
    shown = scheme or "no scheme"
    raise AuthorizationFailed(f"refused to open the authorization URL: its scheme ({shown}) is not http(s)")


def browser_can_open() -> bool:
    """Whether opening a browser can work here: a ``BROWSER`` is set, or there is a display.

    Without one, ``webbrowser`` on Linux would start a text browser (lynx, w3m) in the terminal
    the user is typing in; the URL is printed instead.
    """
    if os.environ.get("BROWSER"):
        return True
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def open_in_browser(url: str, finished: Callable[[bool], None]) -> None:
    """Open ``url`` (checked first) in a daemon thread; ``finished(opened)`` is called from that thread."""
    check_browser_url(url)

    def run() -> None:
        try:
            opened = webbrowser.open(url)
        except Exception:  # noqa: BLE001 - a broken browser setup means "not opened", never a crash
            opened = False
        finished(opened)

    threading.Thread(target=run, name="gatehouse-browser", daemon=True).start()
