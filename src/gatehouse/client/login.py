"""The interactive step of the authorization code flow: browser, loopback answer, checks.

``BrowserLogin`` plugs into the SDK provider as its ``redirect_handler`` / ``callback_handler``.
The SDK generates ``state`` and the PKCE verifier for one request and keeps them together
(CL-9); this module learns the expected ``state`` from the authorization URL, and the listener
accepts exactly one answer carrying it, compared in constant time: any other answer is
discarded with a page saying so (S-CL1), and a second answer finds nothing waiting (single use).

RFC 9207 (CL-10): when the AS advertises ``authorization_response_iss_parameter_supported`` an
answer without ``iss`` is rejected; an ``iss`` present is compared as a plain string with the
issuer the request went to; on a mismatch neither ``code`` nor ``error`` is acted on or shown.

Modes: the browser (``webbrowser``, see ``browser.py``); ``open_browser=False`` prints the URL
and waits; ``headless=True`` fetches the URL itself with httpx2 and follows redirects to the
listener, for authorization servers that approve without a person (conformance suites, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.shared.auth import AuthorizationCodeResult, OAuthMetadata

from gatehouse.client.browser import browser_can_open, check_browser_url, open_in_browser
from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.loopback import LoopbackListener, Page
from gatehouse.client.options import ClientOptions

CLOSE_TAB = "You can close this tab."


def _printable(text: str | None, limit: int = 200) -> str | None:
    if text is None:
        return None
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()[:limit] or None


def time_left(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class _Attempt:
    """One authorization request: what its answer must carry, and where the answer goes."""

    state: str
    issuer: str | None
    iss_required: bool
    answer: asyncio.Future


class BrowserLogin:
    """Gets the user's authorization for one request at a time, through a loopback listener."""

    def __init__(
        self,
        options: ClientOptions,
        status: Callable[[str], None],
        authorization_server: Callable[[], OAuthMetadata | None],
    ):
        self.options = options
        self.status = status
        self._authorization_server = authorization_server
        self._listener: LoopbackListener | None = None
        self._attempt: _Attempt | None = None
        self._headless_task: asyncio.Task | None = None

    def prepare(self, preferred_port: int | None = None) -> str:
        """Bind the listener (before anything is registered or opened); returns the redirect URI."""
        if self._listener is None:
            self._listener = LoopbackListener(preferred_port)
        return self._listener.redirect_uri

    async def close(self) -> None:
        if self._headless_task is not None:
            self._headless_task.cancel()
            with contextlib.suppress(BaseException):
                await self._headless_task
            self._headless_task = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        self._attempt = None

    async def redirect_handler(self, authorization_url: str) -> None:
        """Check the URL (CL-15), start listening, then send the user agent to it."""
        check_browser_url(authorization_url)
        if self._listener is None:
            raise AuthorizationFailed("internal error: the loopback listener was not prepared before the authorization")
        states = parse_qs(urlsplit(authorization_url).query).get("state", [])
        if len(states) != 1 or not states[0]:
            raise AuthorizationFailed("refused to start a sign-in without a single state parameter (CL-9)")
        metadata = self._authorization_server()
        self._attempt = _Attempt(
            state=states[0],
            issuer=str(metadata.issuer) if metadata else None,
            iss_required=bool(metadata and metadata.authorization_response_iss_parameter_supported),
            answer=asyncio.get_running_loop().create_future(),
        )
        await self._listener.start(self._on_callback)
        if self.options.headless:
            self.status("Signing in without a browser (headless mode)…")
            self._headless_task = asyncio.create_task(self._follow_headlessly(authorization_url))
        elif self.options.open_browser and browser_can_open():
            self.status("Opening the browser…")
            print(f"If the browser does not open, visit this URL to sign in:\n  {authorization_url}", file=sys.stderr, flush=True)
            loop = asyncio.get_running_loop()
            open_in_browser(authorization_url, lambda opened: self._from_thread(loop, self._browser_finished, opened))
        else:
            print(f"Open this URL in a browser to sign in:\n  {authorization_url}", file=sys.stderr, flush=True)

    async def callback_handler(self) -> AuthorizationCodeResult:
        """Wait for the answer, reporting the time left once a second; raise on timeout or refusal."""
        attempt = self._attempt
        if attempt is None:
            raise AuthorizationFailed("internal error: no sign-in is in progress")
        loop = asyncio.get_running_loop()
        timeout = self.options.login_timeout
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                self._fail(attempt, AuthorizationFailed(
                    f"no answer from the browser within {timeout:g} s; run the command again and finish signing in, "
                    "or open the printed URL yourself"
                ))
                return attempt.answer.result()
            self.status(f"Waiting for the login ({time_left(left)} left)…")
            try:
                return await asyncio.wait_for(asyncio.shield(attempt.answer), min(1.0, left))
            except asyncio.TimeoutError:
                continue

    def _on_callback(self, params: dict[str, list[str]]) -> Page:
        attempt = self._attempt
        if attempt is None or attempt.answer.done():
            return Page(400, "No sign-in is waiting", f"This sign-in has already finished or expired. {CLOSE_TAB}")
        state = params.get("state", [])
        if len(state) != 1 or not secrets.compare_digest(state[0].encode(), attempt.state.encode()):
            return Page(400, "Answer ignored", f"This answer does not belong to the sign-in in progress, so it was ignored. {CLOSE_TAB}")

        iss = params.get("iss")
        if iss is not None and (len(iss) != 1 or iss[0] != attempt.issuer):
            self._fail(attempt, AuthorizationFailed(
                f"the sign-in answer did not come from {attempt.issuer} (RFC 9207 iss mismatch), so it was not used"
            ))
            return Page(400, "Sign-in failed", f"The answer came from an unexpected authorization server and was not used. {CLOSE_TAB}")
        if iss is None and attempt.iss_required:
            self._fail(attempt, AuthorizationFailed(
                f"the sign-in answer lacks the iss parameter that {attempt.issuer} promises (RFC 9207), so it was not used"
            ))
            return Page(400, "Sign-in failed", f"The answer could not be verified and was not used. {CLOSE_TAB}")

        error = params.get("error")
        if error:
            failure = self._refusal(_printable(error[0], 60) or "error", _printable(params.get("error_description", [None])[0]))
            self._fail(attempt, failure)
            return Page(400, "Sign-in did not complete", f"{str(failure)[:1].upper()}{str(failure)[1:]}. {CLOSE_TAB}")
        code = params.get("code", [])
        if len(code) != 1 or not code[0]:
            self._fail(attempt, AuthorizationFailed("the sign-in answer carried no single authorization code"))
            return Page(400, "Sign-in failed", f"The answer carried no authorization code. {CLOSE_TAB}")
        attempt.answer.set_result(AuthorizationCodeResult(code=code[0], state=state[0], iss=iss[0] if iss else None))
        self.status("Signed in; finishing…")
        return Page(200, "Signed in", f"You are signed in; return to the application. {CLOSE_TAB}")

    def _refusal(self, error: str, description: str | None) -> AuthorizationFailed:
        where = self._attempt.issuer if self._attempt and self._attempt.issuer else "the authorization server"
        detail = f": {description}" if description else ""
        if error == "access_denied":
            return AuthorizationFailed(f"sign-in was declined at {where} (access_denied{detail})")
        return AuthorizationFailed(f"{where} refused the sign-in ({error}{detail})")

    @staticmethod
    def _fail(attempt: _Attempt, failure: AuthorizationFailed) -> None:
        if not attempt.answer.done():
            attempt.answer.set_exception(failure)

    def _browser_finished(self, opened: bool) -> None:
        attempt = self._attempt
        if not opened and attempt is not None and not attempt.answer.done():
            self.status("No browser could be started; open the URL above yourself.")

    @staticmethod
    def _from_thread(loop: asyncio.AbstractEventLoop, callback: Callable, *args) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    async def _follow_headlessly(self, authorization_url: str) -> None:
        attempt = self._attempt
        assert attempt is not None
        host = urlsplit(authorization_url).netloc
        try:
            async with httpx2.AsyncClient(follow_redirects=True, max_redirects=20, timeout=30) as http:
                response = await http.get(authorization_url)
        except httpx2.HTTPError as exc:
            self._fail(attempt, AuthorizationFailed(f"headless sign-in failed at {host}: {type(exc).__name__}"))
            return
        if attempt.answer.done():
            return
        if self._listener is not None and response.url.port == self._listener.port and response.url.host == "127.0.0.1":
            self._fail(attempt, AuthorizationFailed(
                f"headless sign-in: the answer {host} sent back does not carry this sign-in's state, so it was ignored (CL-9)"
            ))
            return
        self._fail(attempt, AuthorizationFailed(
            f"headless sign-in: {host} answered HTTP {response.status_code} instead of redirecting back; "
            "it needs a person, so sign in without headless mode"
        ))
