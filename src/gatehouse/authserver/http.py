"""The edge between Starlette and Authlib: bounded request reading and response conversion."""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from gatehouse.authserver.oauth import AuthlibResponse, PreparedRequest
from gatehouse.authserver.resources import describable

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_JSON_DEPTH = 16


class BadRequestBody(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def oauth_error(status: int, error: str, description: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers={**NO_STORE, **(headers or {})})


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BadRequestBody(413, "invalid_request", f"the request body is larger than {limit} bytes")
        except ValueError:
            raise BadRequestBody(400, "invalid_request", "Content-Length is not a number") from None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise BadRequestBody(413, "invalid_request", f"the request body is larger than {limit} bytes")
    except ClientDisconnect:
        raise BadRequestBody(400, "invalid_request", "the client closed the connection before the whole body arrived") from None
    return bytes(body)


def _refuse_nul(pairs: list[tuple[str, str]]) -> None:
    """No OAuth parameter holds a NUL (RFC 6749 appendix A), and PostgreSQL text cannot store one."""
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise BadRequestBody(400, "invalid_request", "a parameter contains a NUL character, which no OAuth parameter may hold")


def _nested_deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


def _json_object(raw: bytes) -> dict:
    """A JSON object (RFC 8259) that can be stored: no unpaired surrogate escapes, bounded nesting."""
    try:
        data = json.loads(raw)
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise BadRequestBody(400, "invalid_client_metadata", f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeError):
        raise BadRequestBody(
            400, "invalid_client_metadata", "the request body is not valid JSON (UTF-8, no unpaired surrogate escapes)"
        ) from None
    if not isinstance(data, dict):
        raise BadRequestBody(400, "invalid_client_metadata", "client metadata must be a JSON object")
    if _nested_deeper_than(data, MAX_JSON_DEPTH):
        raise BadRequestBody(400, "invalid_client_metadata", f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def prepare(request: Request, issuer: str, *, limit: int, body: str = "form") -> PreparedRequest:
    """Read the request for Authlib. ``body`` is ``form``, ``json`` or ``none``."""
    raw = await read_body(request, limit) if request.method in ("POST", "PUT") else b""
    prepared = PreparedRequest(
        method=request.method,
        uri=issuer + request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        headers=request.headers,
        query=parse_qsl(request.url.query, keep_blank_values=True),
        remote_addr=request.client.host if request.client else None,
    )
    _refuse_nul(prepared.query)
    if request.method not in ("POST", "PUT") or body == "none":
        return prepared
    if body == "form":
        if _media_type(request) != "application/x-www-form-urlencoded":
            raise BadRequestBody(400, "invalid_request", "send the parameters as application/x-www-form-urlencoded")
        try:
            prepared.form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequestBody(400, "invalid_request", "the request body is not valid UTF-8") from None
        _refuse_nul(prepared.form)
        counts = Counter(key for key, _ in prepared.form)
        repeated = next((key for key, n in counts.items() if n > 1 and key != "resource"), None)
        if repeated is not None:
            raise BadRequestBody(400, "invalid_request", describable(f"the parameter {repeated!r} is repeated (RFC 6749 section 3.2)"))
        return prepared
    if _media_type(request) != "application/json":
        raise BadRequestBody(400, "invalid_client_metadata", "send client metadata as application/json")
    prepared.json = _json_object(raw)
    return prepared


def to_starlette(response: AuthlibResponse) -> Response:
    headers = dict(response.headers)
    if response.status in (301, 302, 303, 307, 308):
        return Response(status_code=response.status, headers=headers)
    if isinstance(response.body, dict | list):
        headers.pop("Content-Type", None)
        return JSONResponse(response.body, status_code=response.status, headers={**NO_STORE, **headers})
    return Response(response.body or b"", status_code=response.status, headers=headers)
