"""Client failures that end with one plain line for the user, never a traceback."""

from __future__ import annotations


class ClientError(Exception):
    """A failure the user can act on; ``str(error)`` says what went wrong and what to do."""

    exit_code = 1


class ServerUnreachable(ClientError):
    """The MCP server or its authorization server cannot be reached."""


class AuthorizationFailed(ClientError):
    """The OAuth flow ended without a token: denied, timed out, refused or unsafe."""


class StorageError(ClientError):
    """Stored credentials cannot be read or written; nothing stored was changed."""
