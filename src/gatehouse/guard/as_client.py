"""This resource server as a confidential client of its authorization server: a form POST with
client authentication (RFC 6749 section 2.3.1: ``client_secret_basic``, id and secret
form-urlencoded before Base64, or ``client_secret_post``), redirects not followed, answers of at
most ``MAX_ANSWER_BYTES``."""

from __future__ import annotations

import httpx2

from gatehouse.basic_auth import basic_authorization

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
MAX_ANSWER_BYTES = 64 * 1024


class AnswerTooLarge(Exception):
    """The endpoint answered with more than ``MAX_ANSWER_BYTES`` (logged, never shown)."""


class ConfidentialClient:
    """Posts forms as ``client_id`` over one HTTP client (``http_client``, else its own)."""

    def __init__(self, *, client_id: str, client_secret: str, auth_method: str, timeout: float,
                 http_client: httpx2.AsyncClient | None = None):
        if auth_method not in AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {', '.join(AUTH_METHODS)}, not {auth_method!r}")
        self.client_id = client_id
        self.auth_method = auth_method
        self.timeout = timeout
        self._secret = client_secret
        self._client = http_client
        self._owns_client = http_client is None

    async def post_form(self, endpoint: str, form: dict[str, str]) -> tuple[int, bytes]:
        """The status and body of the answer to ``form``; raises ``httpx2.HTTPError`` or ``AnswerTooLarge``."""
        form = dict(form)
        headers = {"Accept": "application/json"}
        if self.auth_method == "client_secret_basic":
            headers["Authorization"] = basic_authorization(self.client_id, self._secret)
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        async with self._http().stream("POST", endpoint, data=form, headers=headers) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_ANSWER_BYTES:
                    raise AnswerTooLarge(f"an answer larger than {MAX_ANSWER_BYTES} bytes")
            return response.status_code, bytes(body)

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self.timeout, trust_env=False, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None
