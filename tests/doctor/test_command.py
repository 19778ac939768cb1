"""The command's contract: exit 0 / 1 / 2, one line for bad input, never a traceback; and the real CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.doctor.conftest import run_doctor


@pytest.mark.parametrize("args, message", [
    (["mcp.example.com/mcp"], "is not an http:// or https:// URL"),
    (["ftp://mcp.example.com/mcp"], "is not an http:// or https:// URL"),
    (["https://mcp.example.com/mcp#x"], "has a fragment"),
    (["https://mcp.example.com/mcp", "--json", "--markdown"], "choose one of --json and --markdown"),
    (["https://mcp.example.com/mcp", "--headless"], "--headless and --other-resource go with --login"),
    (["https://mcp.example.com/mcp", "--login", "--other-resource", "elsewhere"], "is not an http:// or https:// URL"),
    (["https://mcp.example.com/mcp", "--timeout", "0"], "must be more than 0 seconds"),
    (["https://mcp.example.com/mcp", "--login", "--other-resource", "https://MCP.example.com/mcp/"], "another resource"),
])
def test_usage_errors_exit_2_with_one_line(args, message):
    run = run_doctor(*args)
    assert run.exit_code == 2 and run.output == ""
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_an_unreachable_server_is_one_line_and_exit_1():
    run = run_doctor("http://127.0.0.1:9/mcp", "--json")
    assert run.exit_code == 1 and run.output == ""
    assert run.stderr.startswith("error: cannot reach http://127.0.0.1:9/mcp: cannot connect")
    assert len(run.stderr.strip().splitlines()) == 1


def test_an_unresolvable_host_is_one_line_and_exit_1():
    run = run_doctor("http://doctor-test.invalid/mcp", "--timeout", "2")
    assert run.exit_code == 1 and "cannot reach http://doctor-test.invalid/mcp" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_not_an_mcp_endpoint_fails_with_the_reason(live_as):
    run = run_doctor(f"{live_as.base_url}/healthz", "--json")
    assert run.exit_code == 1
    status = run.check("challenge.status")
    assert status["status"] == "fail" and "answered 405" in status["summary"]


def test_markdown_for_an_issue(live_as):
    run = run_doctor(live_as.resource, "--markdown")
    assert run.exit_code == 0
    assert run.output.startswith(f"## Gatehouse doctor: `{live_as.resource}`")
    assert "| ✅ pass | `as.pkce` | PKCE S256 is advertised | AS-3 |" in run.output and "What to fix" not in run.output


def test_the_gatehouse_cli_runs_the_doctor(live_as):
    from gatehouse.cli import app

    if "doctor" not in {command.name for command in app.registered_commands}:
        pytest.skip("gatehouse/cli.py does not mount the doctor yet: app.command(\"doctor\")(doctor)")
    done = subprocess.run([sys.executable, "-m", "gatehouse.cli", "doctor", live_as.resource, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"schema": "gatehouse.doctor/1"' in done.stdout
    usage = subprocess.run([sys.executable, "-m", "gatehouse.cli", "doctor", "not-a-url"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1
