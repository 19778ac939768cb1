"""Keep issued tokens out of the logs: Authlib's grants log each token they issue at DEBUG.

A filter on the parent ``authlib`` logger would not see these records (filters run only on the
logger a record is made on), so it goes on each grant's own logger. :func:`redact` is the last
line of defence of Gatehouse's own log formatters: whatever slips into a line, JWTs and the
values of credential parameters are masked.
"""

from __future__ import annotations

import logging
import re

TOKEN_LOGGING_MODULES = (
    "authlib.oauth2.rfc6749.grants.authorization_code",
    "authlib.oauth2.rfc6749.grants.client_credentials",
    "authlib.oauth2.rfc6749.grants.implicit",
    "authlib.oauth2.rfc6749.grants.refresh_token",
    "authlib.oauth2.rfc6749.grants.resource_owner_password_credentials",
    "authlib.oauth2.rfc7523.jwt_bearer",
    "authlib.oauth2.rfc8628.device_code",
    "authlib.oauth2.drafts.id_jag",
    # the upstream login client (Authlib's Starlette OAuth client) logs the PKCE verifier it sends
    "authlib.integrations.base_client.sync_app",
    "authlib.integrations.base_client.async_app",
)


class DropIssuedTokens(logging.Filter):
    """Drops the records whose arguments hold an issued token ("Issue token %r to %r") or the
    upstream client's PKCE verifier."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Issue token", "Grant token", "Using code_verifier", "Fetch request token"))


_FILTER = DropIssuedTokens()


def keep_tokens_out_of_logs() -> None:
    for name in TOKEN_LOGGING_MODULES:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


REDACTED = "[redacted]"
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_CREDENTIAL_NAMES = (
    r"access_token|refresh_token|id_token|subject_token|actor_token|assertion|client_assertion|client_secret|"
    r"registration_access_token|code_verifier|code|password|token"
)
# name=value (forms, query strings) and "name": "value" (JSON)
_CREDENTIAL_PAIR = re.compile(rf"(?i)\b({_CREDENTIAL_NAMES})(=|\"\s*:\s*\")([^&\s\"',;]+)")
_BEARER = re.compile(r"(?i)\b(Bearer|DPoP|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str) -> str:
    """``text`` with JWTs, ``Authorization`` credentials and credential parameter values masked."""
    if not text:
        return text
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _CREDENTIAL_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
