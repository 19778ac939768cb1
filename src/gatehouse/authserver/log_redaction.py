"""Keep issued tokens out of the logs: Authlib's grants log each token they issue at DEBUG.

A filter on the parent ``authlib`` logger would not see these records (filters run only on the
logger a record is made on), so it goes on each grant's own logger.
"""

from __future__ import annotations

import logging

TOKEN_LOGGING_MODULES = (
    "authlib.oauth2.rfc6749.grants.authorization_code",
    "authlib.oauth2.rfc6749.grants.client_credentials",
    "authlib.oauth2.rfc6749.grants.implicit",
    "authlib.oauth2.rfc6749.grants.refresh_token",
    "authlib.oauth2.rfc6749.grants.resource_owner_password_credentials",
    "authlib.oauth2.rfc7523.jwt_bearer",
    "authlib.oauth2.rfc8628.device_code",
    "authlib.oauth2.drafts.id_jag",
)


class DropIssuedTokens(logging.Filter):
    """Drops the records whose arguments hold an issued token ("Issue token %r to %r")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Issue token", "Grant token"))


_FILTER = DropIssuedTokens()


def keep_tokens_out_of_logs() -> None:
    for name in TOKEN_LOGGING_MODULES:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
