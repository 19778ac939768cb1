"""The report for people (rich), for issues (Markdown) and for CI (JSON, ``model.SCHEMA``).

People's and Markdown reports are grouped by role, the roles with failures first and, within a
role, failures, then warnings, then skipped checks, then passes; every failure and warning shows
its fix and the request and answer that decided it.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.text import Text

from gatehouse.doctor.model import Check, Report, Status

STYLE = {Status.FAIL: "bold red", Status.WARN: "yellow", Status.SKIPPED: "dim", Status.PASS: "green"}
MARK = {Status.FAIL: "✗ fail", Status.WARN: "! warn", Status.SKIPPED: "- skip", Status.PASS: "✓ pass"}
EMOJI = {Status.FAIL: "❌ fail", Status.WARN: "⚠️ warn", Status.SKIPPED: "➖ skipped", Status.PASS: "✅ pass"}


def totals(report: Report) -> str:
    counts = report.counts()
    parts = [f"{counts['fail']} failed", f"{counts['warn']} warning{'s' if counts['warn'] != 1 else ''}",
             f"{counts['pass']} passed", f"{counts['skipped']} skipped"]
    return ", ".join(parts)


def _tags(check: Check) -> str:
    tags = [check.requirement] if check.requirement else []
    if check.pitfall:
        tags.append(f"pitfall: {check.pitfall}")
    return f" [{'; '.join(tags)}]" if tags else ""


def to_console(report: Report, console: Console) -> None:
    console.print(Text.assemble(("Gatehouse doctor: ", "bold"), (report.target, "bold")))
    for role, checks in report.by_role():
        console.print()
        console.print(Text(role, style="bold underline"))
        for check in checks:
            line = Text.assemble((f" {MARK[check.status]} ", STYLE[check.status]), (check.id, "bold"), "  ", check.summary,
                                 (_tags(check), "dim"))
            console.print(line)
            if check.status in (Status.FAIL, Status.WARN):
                if check.fix:
                    console.print(Text.assemble(("     fix: ", "bold"), check.fix))
                for exchange in check.evidence[:3]:
                    console.print(Text.assemble(("     evidence: ", "dim"), (exchange.line(), "dim")))
    console.print()
    style = "bold red" if report.failed else "bold green"
    console.print(Text.assemble((totals(report), style), (f"  ({report.duration_ms / 1000:.2f} s)", "dim")))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    lines = [f"## Gatehouse doctor: `{report.target}`", "", f"**Result:** {totals(report)}"
             f"{' (with --login)' if report.login else ''}", ""]
    for role, checks in report.by_role():
        lines += [f"### {role}", "", "| Status | Check | Finding | Requirement |", "| --- | --- | --- | --- |"]
        for check in checks:
            requirement = check.requirement or ""
            if check.pitfall:
                requirement += f" (pitfall: {check.pitfall})"
            lines.append(f"| {EMOJI[check.status]} | `{check.id}` | {_cell(check.summary)} | {_cell(requirement)} |")
        lines.append("")
    to_fix = [c for _, checks in report.by_role() for c in checks if c.status in (Status.FAIL, Status.WARN)]
    if to_fix:
        lines += ["### What to fix", ""]
        for check in to_fix:
            lines.append(f"- {EMOJI[check.status]} **`{check.id}`**{_tags(check)}: {check.fix}")
            if check.evidence:
                lines += ["  ```", *[f"  {exchange.line()}" for exchange in check.evidence[:3]], "  ```"]
        lines.append("")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2)
