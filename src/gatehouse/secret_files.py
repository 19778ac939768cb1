"""Secrets read from files (never from the command line, where other users can read them)."""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: Path, what: str = "client secret") -> str:
    """The secret in ``path``, stripped; ``ValueError`` says why there is none."""
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the {what} from {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not secret:
        raise ValueError(f"the {what} file {path} is empty")
    return secret
