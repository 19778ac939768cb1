"""Running the official MCP conformance harness (``@modelcontextprotocol/conformance``) from pytest.

The harness and Node 22 are npm dependencies of this folder (``package.json``, ``package-lock.json``;
``npm ci`` here, which ``.ci/run`` does). Node is taken from ``GATEHOUSE_NODE`` (set by ``.ci/run``),
else from ``node_modules/node/bin/node``; without Node 22 or the harness the tests skip locally
and fail in CI (``missing_component``).

Failures are reported with the harness's own words: its summary lines, and for each failing
scenario the checks it marked FAILURE or WARNING (as in its "Failed Checks" section), with the
tail of what the client under test wrote to stderr.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import missing_component

HERE = Path(__file__).resolve().parent
HARNESS_JS = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
LOCAL_NODE = HERE / "node_modules" / "node" / "bin" / "node"
EXPECTED_FAILURES = HERE / "expected-failures.yml"
CLIENT_ENTRY_POINT = HERE / "client.py"
HARNESS_VERSION = "0.2.0-alpha.12"

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY_LINE = re.compile(r"^[✓✗] \S+: \d+ passed, \d+ failed")
BAD = ("FAILURE", "WARNING")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def find_node() -> str:
    """A Node 22 (or newer) binary: ``GATEHOUSE_NODE``, else this folder's ``node@22`` package."""
    candidates = [os.environ.get("GATEHOUSE_NODE"), str(LOCAL_NODE)]
    tried = []
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
        except OSError as exc:
            tried.append(f"{candidate}: {exc.strerror}")
            continue
        match = re.match(r"v(\d+)\.", version)
        if match and int(match.group(1)) >= 22:
            return candidate
        tried.append(f"{candidate}: {version or 'no version'}")
    missing_component(
        "Node 22 for the MCP conformance harness not found (set GATEHOUSE_NODE, or run `npm ci` in tests/conformance); "
        f"tried: {'; '.join(tried) or 'nothing'}"
    )


def check_harness() -> None:
    package = HARNESS_JS.parent.parent / "package.json"
    if not HARNESS_JS.is_file() or not package.is_file():
        missing_component(f"the MCP conformance harness is not installed: run `npm ci` in {HERE}")
    version = json.loads(package.read_text())["version"]
    assert version == HARNESS_VERSION, (
        f"tests/conformance/node_modules holds @modelcontextprotocol/conformance {version}, the lock file pins "
        f"{HARNESS_VERSION}: run `npm ci` in {HERE}"
    )


def client_command() -> str:
    """The ``--command`` for client mode; the harness splits it on spaces and appends the server URL."""
    parts = [sys.executable, str(CLIENT_ENTRY_POINT)]
    assert not any(" " in part for part in parts), f"the harness splits --command on spaces: {parts}"
    return " ".join(parts)


def expected_failures(mode: str) -> dict[str, str]:
    """The ``client:`` or ``server:`` entries of ``expected-failures.yml``, each with its reason (its comment)."""
    entries: dict[str, str] = {}
    section = None
    for line in EXPECTED_FAILURES.read_text().splitlines():
        if re.match(r"^\w+:", line):
            section = line.split(":", 1)[0]
            continue
        match = re.match(r"^\s+-\s+([^\s#]+)\s*(?:#\s*(.*))?$", line)
        if match and section == mode:
            entries[match.group(1)] = match.group(2) or ""
    return entries


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ScenarioResult:
    """One scenario's ``checks.json`` (and the client's stderr, in client mode), as the harness saved them."""

    scenario: str
    checks: list[dict]
    stderr: str = ""

    @property
    def bad_checks(self) -> list[dict]:
        return [check for check in self.checks if check.get("status") in BAD]

    @property
    def passed(self) -> bool:
        return not self.bad_checks

    def summary_line(self) -> str:
        """The harness's suite summary line for this scenario (same counts, same format)."""
        passed = sum(1 for c in self.checks if c.get("status") == "SUCCESS")
        failed = sum(1 for c in self.checks if c.get("status") == "FAILURE")
        warnings = sum(1 for c in self.checks if c.get("status") == "WARNING")
        mark = "✓" if failed == 0 and warnings == 0 else "✗"
        return f"{mark} {self.scenario}: {passed} passed, {failed} failed" + (f", {warnings} warnings" if warnings else "")

    def explain(self, stderr_lines: int = 15) -> str:
        """The failing checks, as the harness lists them, and the end of the client's stderr."""
        lines = [self.summary_line()]
        for check in self.bad_checks:
            lines.append(f"  - [{check['status']}] {check.get('id')}: {check.get('description', '')}")
            if check.get("errorMessage"):
                lines.append(f"    Error: {check['errorMessage']}")
        tail = [line for line in plain(self.stderr).splitlines() if line.strip()][-stderr_lines:]
        if tail:
            lines.append("  client stderr (last lines):")
            lines.extend(f"    | {line}" for line in tail)
        return "\n".join(lines)


@dataclass
class HarnessRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    output_dir: Path
    seconds: float
    results: dict[str, ScenarioResult] = field(default_factory=dict)

    def summary(self) -> str:
        """What the harness printed from its summary on: ``=== SUITE SUMMARY ===`` and after, else its result lines."""
        text = plain(self.stdout)
        if "=== SUITE SUMMARY ===" in text:
            return text[text.index("=== SUITE SUMMARY ==="):].strip()
        keep = [line for line in plain(self.stdout + "\n" + self.stderr).splitlines()
                if SUMMARY_LINE.match(line) or line.startswith(("Passed:", "Total:", "✅", "❌", "⚠️", "  ~", "  ✗", "  ✓"))
                or "Baseline" in line or "baseline" in line]
        return "\n".join(keep).strip()

    def summary_lines(self) -> list[str]:
        return [line for line in plain(self.stdout).splitlines() if SUMMARY_LINE.match(line)]

    def explain(self, scenarios=None) -> str:
        """The harness's summary, then each failing scenario's checks (all of them when ``scenarios`` is None)."""
        parts = [f"$ node conformance {' '.join(self.args)}  (exit {self.returncode}, {self.seconds:.1f} s)", self.summary()]
        for name, result in sorted(self.results.items()):
            if (scenarios is None or name in scenarios) and not result.passed:
                parts.append(result.explain())
        if not self.results:
            parts.append("harness stderr (last lines):\n" + "\n".join(plain(self.stderr).splitlines()[-30:]))
        return "\n\n".join(part for part in parts if part)


def collect(output_dir: Path, prefix: str = "") -> dict[str, ScenarioResult]:
    """Each ``<output_dir>/<prefix><scenario>-<timestamp>/checks.json`` the harness saved."""
    results = {}
    for checks_file in sorted(output_dir.rglob("checks.json")):
        folder = checks_file.parent
        relative = folder.relative_to(output_dir).as_posix()
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", relative)
        scenario = scenario.removeprefix(prefix)
        stderr_file = folder / "stderr.txt"
        results[scenario] = ScenarioResult(
            scenario, json.loads(checks_file.read_text()), stderr_file.read_text(errors="replace") if stderr_file.exists() else ""
        )
    return results


def harness_env(node: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MCP_CONFORMANCE_SCENARIO", None)
    env.pop("MCP_CONFORMANCE_CONTEXT", None)
    return env


def run_harness(node: str, args: list[str], output_dir: Path, *, timeout: float = 240, prefix: str = "") -> HarnessRun:
    """Run ``conformance <args> -o <output_dir>`` to the end and collect what it saved."""
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        done = subprocess.run(
            [node, str(HARNESS_JS), *args, "-o", str(output_dir)],
            capture_output=True, text=True, timeout=timeout, env=harness_env(node), cwd=HERE,
        )
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = -1
        stdout = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = ((exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")) + (
            f"\n(the harness did not finish within {timeout:g} s)"
        )
    return HarnessRun(args, returncode, stdout, stderr, output_dir, time.monotonic() - start, collect(output_dir, prefix))
