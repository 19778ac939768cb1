"""Typed errors of the upstream token vault (UP-3), shared by the AS and the guard.

A tool that calls an upstream API through ``await upstream_token("google")`` catches
:class:`UpstreamTokenError` and turns it into an MCP error result; each subclass says what the
user or the operator has to do. ``error`` is the OAuth error code the AS's token-exchange
endpoint answers with, so the guard can raise the same class on its side of the channel.
"""

from __future__ import annotations


class UpstreamTokenError(Exception):
    """The upstream token for ``provider`` cannot be had; ``str(exc)`` says why and what to do."""

    error = "upstream_token_unavailable"

    def __init__(self, provider: str, message: str):
        super().__init__(message)
        self.provider = provider


class UpstreamNotLinked(UpstreamTokenError):
    """The user never signed in through this provider, or the link was removed."""

    error = "upstream_not_linked"


class UpstreamReauthorizationRequired(UpstreamTokenError):
    """The provider refused the stored refresh token (revoked or expired): sign in there again."""

    error = "upstream_reauthorization_required"


class UpstreamUnavailable(UpstreamTokenError):
    """The provider could not be reached or answered with an error; retrying later may work."""

    error = "upstream_unavailable"


ERRORS_BY_CODE: dict[str, type[UpstreamTokenError]] = {
    cls.error: cls for cls in (UpstreamTokenError, UpstreamNotLinked, UpstreamReauthorizationRequired, UpstreamUnavailable)
}
