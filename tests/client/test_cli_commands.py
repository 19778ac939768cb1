"""``gatehouse connect|tools|call`` as users run them: real processes, exit codes 0/1/2, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.client.test_bridge import tool_server_app

GATEHOUSE = [sys.executable, "-m", "gatehouse.cli"]


@pytest.fixture
def tool_server(loopback_server):
    with loopback_server(tool_server_app()) as base_url:
        yield f"{base_url}/mcp"


@pytest.fixture
def cli(tmp_path):
    """Run ``gatehouse`` with a credential store of its own; ``env`` adds variables."""

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        environment = {name: value for name, value in os.environ.items() if name != "GATEHOUSE_CLIENT_SECRET"}
        environment.update({"GATEHOUSE_CREDENTIALS_DIR": str(tmp_path / "credentials"), **(env or {})})
        return subprocess.run([*GATEHOUSE, *args], capture_output=True, text=True, env=environment, timeout=60)

    return run


def test_a_server_that_needs_no_auth_just_works(tool_server, cli):
    listed = cli("tools", tool_server)
    assert listed.returncode == 0, listed.stderr
    assert "echo" in listed.stdout and "a: integer, b: integer" in listed.stdout
    tools = {tool["name"]: tool for tool in json.loads(cli("tools", tool_server, "--json").stdout)}
    assert tools["echo"]["inputSchema"]["required"] == ["text"] and tools["add"]["description"] == "Add two integers."

    connected = json.loads(cli("connect", tool_server, "--json").stdout)
    assert connected["server"] == {"name": "bridge-test-tools", "title": "Bridge test tools", "version": "1.2.3"}
    assert "tools" in connected["capabilities"] and connected["authenticated"] is False and connected["scopes"] is None
    shown = cli("connect", tool_server)
    assert "Connected to Bridge test tools 1.2.3" in shown.stdout and "asked for no login" in shown.stdout


def test_call_reads_arguments_as_the_schema_wants(tool_server, cli):
    echoed = cli("call", tool_server, "echo", "--arg", "text=123")
    assert (echoed.returncode, echoed.stdout) == (0, "echo: 123\n"), echoed.stderr
    added = cli("call", tool_server, "add", "--arg", "a=2", "--arg", "b=3")
    assert added.stdout == "5\n"
    as_json = json.loads(cli("call", tool_server, "add", "--json-args", '{"a": 1, "b": 4}', "--json").stdout)
    assert as_json["structuredContent"] == {"result": 5} and as_json.get("isError") is not True


@pytest.mark.parametrize(("args", "exit_code", "words"), [
    (("tools", "{closed}"), 1, "cannot reach http://127.0.0.1:"),
    (("call", "{url}", "add", "--arg", "a=two", "--arg", "b=1"), 2, "argument a: 'two' is not of type 'integer'"),
    (("call", "{url}", "add", "--arg", "a=1"), 2, "'b' is a required property"),
    (("call", "{url}", "add", "--arg", "a"), 2, "--arg 'a' is not NAME=VALUE"),
    (("call", "{url}", "add", "--json-args", "[1, 2]"), 2, "--json-args must be a JSON object"),
    (("call", "{url}", "add", "--json-args", "{a: 1}"), 2, "--json-args is not valid JSON"),
    (("call", "{url}", "nope"), 1, "offers you no tool named 'nope'"),
    (("call", "{url}", "fail", "--arg", "reason=on purpose"), 1, "the tool 'fail' failed: Error executing tool fail: on purpose"),
    (("connect", "example.com/mcp"), 2, "is not an http:// or https:// URL"),
    (("connect", "{url}", "--client-credentials"), 2, "--client-credentials needs the machine client's --client-id"),
], ids=["unreachable", "wrong-type", "missing-argument", "not-name-value", "json-not-object", "json-invalid",
        "unknown-tool", "tool-error", "not-a-url", "machine-without-id"])
def test_bad_input_is_one_line_with_the_right_exit_code(tool_server, cli, extra_socket, args, exit_code, words):
    closed = f"http://127.0.0.1:{extra_socket.getsockname()[1]}/mcp"  # bound, never listening
    places = {"{url}": tool_server, "{closed}": closed}
    result = cli(*[places.get(arg, arg) for arg in args])
    lines = result.stderr.strip().splitlines()
    assert (result.returncode, len(lines)) == (exit_code, 1), result.stderr
    assert words in lines[0] and "Traceback" not in result.stderr


def machine_client(live_as, scope: str) -> dict:
    return live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                            redirect_uris=None, scope=scope)


def test_demo_server_with_client_credentials(live_as, cli, tmp_path):
    client = machine_client(live_as, "notes:read notes:write")
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(client["client_secret"] + "\n")
    machine = ["--client-credentials", "--client-id", client["client_id"], "--scope", "notes:read notes:write"]

    connected = cli("connect", live_as.resource, *machine, "--client-secret-file", str(secret_file), "--json")
    assert connected.returncode == 0, connected.stderr
    summary = json.loads(connected.stdout)
    assert summary["server"]["name"] == "gatehouse-notes" and summary["authenticated"] is True
    assert summary["scopes"] == ["notes:read", "notes:write"]

    from_env = {"GATEHOUSE_CLIENT_SECRET": client["client_secret"]}
    added = cli("call", live_as.resource, "add_note", "--arg", "title=From the CLI", "--arg", "body=hello", *machine, env=from_env)
    assert added.returncode == 0, added.stderr
    listed = json.loads(cli("call", live_as.resource, "list_notes", *machine, "--json", env=from_env).stdout)
    assert "From the CLI" in json.dumps(listed["content"])
    assert "add_note" in cli("tools", live_as.resource, *machine, env=from_env).stdout


def test_a_scope_the_client_may_not_have_is_one_line(live_as, cli):
    client = machine_client(live_as, "notes:read")
    machine = ["--client-credentials", "--client-id", client["client_id"]]
    result = cli("call", live_as.resource, "add_note", "--arg", "title=x", "--arg", "body=y", *machine,
                 env={"GATEHOUSE_CLIENT_SECRET": client["client_secret"]})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "invalid_scope" in lines[0], result.stderr
    assert client["client_secret"] not in result.stderr + result.stdout
