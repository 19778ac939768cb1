"""What a doctor run is told: the command's flags as one value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DoctorOptions:
    login: bool = False
    headless: bool = False
    """Sign in without a browser (for authorization servers that approve without a person)."""
    other_resource: str | None = None
    """A resource the same AS issues tokens for, other than this server (the audience check)."""
    timeout: float = 5.0
    login_timeout: float = 300.0
    status: Callable[[str], None] | None = None
    """Progress lines for people, during ``--login``."""
