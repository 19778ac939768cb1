"""What the doctor finds: checks with a status, the evidence that decided them, and a fix.

The JSON form (``Report.to_json``) is a stable schema for CI, ``gatehouse.doctor/1``::

    {"schema": "gatehouse.doctor/1", "target": URL, "login": bool, "duration_ms": int,
     "exit_code": 0 | 1, "counts": {"pass": n, "warn": n, "fail": n, "skipped": n},
     "checks": [{"id", "group", "role", "status", "summary", "evidence": [exchange, ...],
                 "fix", "requirement", "pitfall"}]}

``evidence`` items are ``fetch.Exchange.to_evidence()`` dicts (method, url, status, selected
headers, a body excerpt, an error), with every credential redacted. Fields may be added to the
schema; none is removed or renamed without a new schema version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatehouse.doctor.fetch import Exchange

SCHEMA = "gatehouse.doctor/1"


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


#: Most urgent first: the order of a report.
SEVERITY = {Status.FAIL: 0, Status.WARN: 1, Status.SKIPPED: 2, Status.PASS: 3}


class Group(str, Enum):
    """The probe modules; each belongs to the role whose setup it checks."""

    CHALLENGE = "challenge"
    RESOURCE_METADATA = "protected-resource-metadata"
    SERVER_METADATA = "authorization-server-metadata"
    REGISTRATION = "registration"
    LOGIN = "login"
    CORS = "cors"


ROLE_OF_GROUP = {
    Group.CHALLENGE: "MCP server (resource server)",
    Group.RESOURCE_METADATA: "MCP server (resource server)",
    Group.SERVER_METADATA: "Authorization server",
    Group.REGISTRATION: "Authorization server",
    Group.LOGIN: "Sign-in and tokens (--login)",
    Group.CORS: "Browser-based clients (CORS)",
}
ROLES = list(dict.fromkeys(ROLE_OF_GROUP.values()))


@dataclass
class Check:
    """One named check: ``id`` is stable (``group-prefix.name``), ``summary`` one line of what was found."""

    id: str
    group: Group
    status: Status
    summary: str
    evidence: list[Exchange] = field(default_factory=list)
    fix: str | None = None
    requirement: str | None = None
    pitfall: str | None = None
    """The name of a known pitfall this finding is (``trailing-slash issuer mismatch``…)."""

    @property
    def role(self) -> str:
        return ROLE_OF_GROUP[self.group]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group.value,
            "role": self.role,
            "status": self.status.value,
            "summary": self.summary,
            "evidence": [exchange.to_evidence() for exchange in self.evidence],
            "fix": self.fix,
            "requirement": self.requirement,
            "pitfall": self.pitfall,
        }


def passed(id: str, group: Group, summary: str, *evidence: Exchange, requirement: str | None = None) -> Check:
    return Check(id, group, Status.PASS, summary, list(evidence), None, requirement)


def warned(id: str, group: Group, summary: str, *evidence: Exchange, fix: str, requirement: str | None = None,
           pitfall: str | None = None) -> Check:
    return Check(id, group, Status.WARN, summary, list(evidence), fix, requirement, pitfall)


def failed(id: str, group: Group, summary: str, *evidence: Exchange, fix: str, requirement: str | None = None,
           pitfall: str | None = None) -> Check:
    return Check(id, group, Status.FAIL, summary, list(evidence), fix, requirement, pitfall)


def skipped(id: str, group: Group, reason: str, *evidence: Exchange, requirement: str | None = None) -> Check:
    return Check(id, group, Status.SKIPPED, reason, list(evidence), None, requirement)


@dataclass
class Report:
    target: str
    checks: list[Check]
    login: bool = False
    duration_ms: int = 0

    @property
    def failed(self) -> bool:
        return any(check.status is Status.FAIL for check in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when nothing fails (warnings do not fail a run), 1 when a check fails."""
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        return {status.value: sum(1 for c in self.checks if c.status is status) for status in Status}

    def by_role(self) -> list[tuple[str, list[Check]]]:
        """Roles with their checks, most urgent first: roles by their worst check, checks by status."""
        groups = []
        for role in ROLES:
            checks = sorted((c for c in self.checks if c.role == role), key=lambda c: SEVERITY[c.status])
            if checks:
                groups.append((role, checks))
        return sorted(groups, key=lambda item: SEVERITY[item[1][0].status])

    def get(self, check_id: str) -> Check | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "target": self.target,
            "login": self.login,
            "duration_ms": self.duration_ms,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [check.to_json() for check in self.checks],
        }
