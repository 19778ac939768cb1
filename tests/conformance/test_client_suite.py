"""gatehouse.client against the official MCP conformance suite's client scenarios (issue 5).

The harness starts its own MCP server and authorization server per scenario and runs
``client.py`` (this folder) against them; ``client.py`` authorizes with ``gatehouse.client`` only.

- The ``auth``, ``backcompat`` and ``extensions`` suites run whole (their scenarios in parallel),
  with ``expected-failures.yml``: the harness's exit status decides, and its suite summary
  lines are printed.
- The auth scenarios of spec 2026-07-28 belong to no auth-only suite (the harness's ``draft``
  suite mixes them with scenarios that are not about authorization), so each runs alone; there
  the harness also fails a client that exits non-zero or times out, unless the scenario
  expects the client to give up.
- ``test_every_auth_scenario_is_covered`` fails when a harness upgrade adds an auth scenario
  that none of the above runs.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conformance.harness import (
    EXPECTED_FAILURES,
    HARNESS_JS,
    client_command,
    expected_failures,
    harness_env,
    plain,
    run_harness,
)

SUITES = ["auth", "backcompat", "extensions"]
SCENARIOS_OF_SUITES = {
    "auth": [
        "auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3", "auth/basic-cimd",
        "auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported", "auth/scope-omitted-when-undefined",
        "auth/scope-step-up", "auth/scope-retry-limit", "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none", "auth/pre-registration",
    ],
    "backcompat": ["auth/2025-03-26-oauth-metadata-backcompat", "auth/2025-03-26-oauth-endpoint-fallback"],
    "extensions": [
        "auth/client-credentials-jwt", "auth/client-credentials-basic", "auth/enterprise-managed-authorization",
        "auth/dpop", "auth/dpop-nonce", "auth/wif-jwt-bearer",
    ],
}
ALONE = [
    "auth/resource-mismatch", "auth/offline-access-scope", "auth/offline-access-not-supported",
    "auth/authorization-server-migration", "auth/iss-supported", "auth/iss-not-advertised", "auth/iss-supported-missing",
    "auth/iss-wrong-issuer", "auth/iss-unexpected", "auth/iss-normalized", "auth/metadata-issuer-mismatch",
]


def _report(lines: str) -> None:
    """Shown by ``make conformance`` (pytest -s); captured otherwise."""
    print("\n" + lines, flush=True)


def _expected_note(names) -> str:
    expected = expected_failures("client")
    listed = [f"  ~ {name}: {expected[name]}" for name in names if name in expected]
    return ("expected failures (expected-failures.yml):\n" + "\n".join(listed)) if listed else ""


@pytest.mark.parametrize("suite", SUITES)
def test_client_suite(node, suite, tmp_path):
    run = run_harness(
        node,
        ["client", "--command", client_command(), "--suite", suite, "--expected-failures", str(EXPECTED_FAILURES)],
        tmp_path / "results", timeout=180,
    )
    note = _expected_note(SCENARIOS_OF_SUITES[suite])
    _report(f"conformance client --suite {suite} ({run.seconds:.1f} s)\n{run.summary()}\n{note}".rstrip())
    expected = expected_failures("client")
    unexpected = [name for name, result in run.results.items() if not result.passed and name not in expected]
    assert run.returncode == 0 and not unexpected, run.explain(scenarios=None if run.returncode else unexpected)
    missing = sorted(set(SCENARIOS_OF_SUITES[suite]) - set(run.results))
    assert not missing, f"the harness ran no {', '.join(missing)} in --suite {suite}\n\n{run.explain()}"


@pytest.mark.parametrize("scenario", ALONE)
def test_client_scenario(node, scenario, tmp_path):
    args = ["client", "--command", client_command(), "--scenario", scenario]
    if scenario in expected_failures("client"):
        args += ["--expected-failures", str(EXPECTED_FAILURES)]
    run = run_harness(node, args, tmp_path / "results", timeout=90)
    result = run.results.get(scenario)
    verdict = next((line for line in plain(run.stderr).splitlines() if "OVERALL" in line), "no verdict")
    line = result.summary_line() if result else f"✗ {scenario}: no results"
    _report(f"{line}  [alone: {verdict.strip()}, {run.seconds:.1f} s]\n{_expected_note([scenario])}".rstrip())
    assert run.returncode == 0 and result is not None, run.explain()


def test_every_auth_scenario_is_covered(node):
    listing = subprocess.run(
        [node, str(HARNESS_JS), "list", "--client"], capture_output=True, text=True, timeout=60, env=harness_env(node)
    )
    text = plain(listing.stdout)
    listed = set(re.findall(r"^\s*-\s+(auth/[\w.-]+)", text, flags=re.MULTILINE))
    covered = {name for names in SCENARIOS_OF_SUITES.values() for name in names} | set(ALONE)
    assert listed, f"`conformance list` named no auth scenario:\n{text[-2000:]}"
    assert listed <= covered, f"auth scenarios the tests do not run: {sorted(listed - covered)}"
