"""The ``gatehouse`` CLI as users run it: real processes, exit codes 0/1/2, readable errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

GATEHOUSE = [sys.executable, "-m", "gatehouse.cli"]


def run(*args, data_dir=None, stdin=None, env=None):
    argv = [*GATEHOUSE, *args]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    environment = {**os.environ, **(env or {})}
    environment.pop("GATEHOUSE_DATABASE_URL", None) if "GATEHOUSE_DATABASE_URL" not in (env or {}) else None
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=environment, timeout=60)


def assert_no_traceback(result):
    assert "Traceback" not in result.stdout + result.stderr


def test_users_add_and_errors(tmp_path):
    ok = run("users", "add", "dave", "--password-stdin", data_dir=tmp_path, stdin="s3cret-password\n")
    assert ok.returncode == 0 and "Created user dave" in ok.stdout
    duplicate = run("users", "add", "dave", "--password-stdin", data_dir=tmp_path, stdin="s3cret-password\n")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    short = run("users", "add", "erin", "--password-stdin", data_dir=tmp_path, stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    bad_name = run("users", "add", "no spaces", "--password-stdin", data_dir=tmp_path, stdin="s3cret-password\n")
    assert bad_name.returncode == 1 and "not a valid username" in bad_name.stderr
    for result in (duplicate, short, bad_name):
        assert_no_traceback(result)


def test_usage_error_exits_2(tmp_path):
    result = run("users", "add", data_dir=tmp_path)
    assert result.returncode == 2 and "Missing argument" in result.stderr


def test_clients_lifecycle(tmp_path):
    added = run("clients", "add", "--name", "Build bot", "--grant-type", "client_credentials", "--scope", "notes:read", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    client_id = added.stdout.split("client_id:")[1].split()[0]
    assert "client_secret:" in added.stdout
    listed = run("clients", "list", data_dir=tmp_path)
    assert client_id in listed.stdout and "Build bot" in listed.stdout
    as_json = json.loads(run("clients", "list", "--json", data_dir=tmp_path).stdout)
    assert [c["client_id"] for c in as_json] == [client_id] and as_json[0]["kind"] == "static"
    shown = run("clients", "show", client_id, data_dir=tmp_path)
    assert json.loads(shown.stdout)["client_name"] == "Build bot"
    removed = run("clients", "remove", client_id, data_dir=tmp_path)
    assert removed.returncode == 0
    missing = run("clients", "show", client_id, data_dir=tmp_path)
    assert missing.returncode == 1 and "no client" in missing.stderr


def test_clients_add_rejects_unsafe_redirect(tmp_path):
    result = run("clients", "add", "--name", "Bad", "--redirect-uri", "http://example.com/cb", data_dir=tmp_path)
    assert result.returncode == 1 and "https" in result.stderr
    assert_no_traceback(result)


def test_keys_rotate_and_list(tmp_path):
    assert run("db", "upgrade", data_dir=tmp_path).returncode == 0
    run("users", "add", "frank", "--password-stdin", data_dir=tmp_path, stdin="s3cret-password\n")
    rotated = run("keys", "rotate", "--activation-delay", "0", data_dir=tmp_path)
    assert rotated.returncode == 0 and "is published now" in rotated.stdout
    listed = run("keys", "list", data_dir=tmp_path)
    assert listed.stdout.count("\n") >= 5


def test_bad_secret_key_is_explained(tmp_path):
    result = run("users", "add", "gina", "--password-stdin", data_dir=tmp_path, stdin="s3cret-password\n",
                 env={"GATEHOUSE_SECRET_KEY": "too-short"})
    assert result.returncode == 1 and "GATEHOUSE_SECRET_KEY" in result.stderr
    assert_no_traceback(result)


def test_unreachable_database_is_explained(tmp_path):
    result = run("db", "upgrade", env={"GATEHOUSE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert result.returncode == 1 and "cannot open the database" in result.stderr
    assert_no_traceback(result)


def test_invalid_issuer_is_a_clear_error(tmp_path):
    result = run("serve", "--issuer", "ftp://x", data_dir=tmp_path)
    assert result.returncode == 1 and "issuer" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("demo_user", [None, "demo"])
def test_serve_first_start_account_message(tmp_path, demo_user):
    from tests.conftest import free_socket
    from tests.integration.test_restart import start_serve, stop

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_DATABASE_URL"}
    if demo_user:
        process = subprocess.Popen(
            [*GATEHOUSE, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--demo-user", demo_user],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        import time

        import httpx2
        for _ in range(300):
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.1)
    else:
        process = start_serve(tmp_path, port, env)
    output = stop(process)
    if demo_user:
        assert "Created the demo account demo with password" in output
        again = start_serve(tmp_path, port, env)
        assert "password" not in stop(again)
    else:
        assert "No accounts yet" in output and "gatehouse users add" in output


def test_gateway_explains_an_unreachable_issuer(tmp_path):
    result = run("gateway", "--upstream", "http://127.0.0.1:9/mcp", "--issuer", "http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot find the authorization server's keys" in result.stderr
    assert_no_traceback(result)


def test_gateway_explains_a_bad_policy_file(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[tools]\nshout = "tools:write"\n')
    result = run("gateway", "--upstream", "http://127.0.0.1:9/mcp", "--issuer", "http://127.0.0.1:9", "--policy", str(policy))
    assert result.returncode == 1 and "tools.shout must be a list" in result.stderr
    assert_no_traceback(result)


def test_gateway_needs_exactly_one_upstream(tmp_path):
    neither = run("gateway", "--issuer", "http://127.0.0.1:9", "--jwks-uri", "http://127.0.0.1:9/jwks")
    both = run("gateway", "--issuer", "http://127.0.0.1:9", "--jwks-uri", "http://127.0.0.1:9/jwks",
               "--upstream", "http://127.0.0.1:9/mcp", "--", "python", "server.py")
    for result in (neither, both):
        assert result.returncode == 2 and "either --upstream URL or" in result.stderr
        assert_no_traceback(result)


def test_gateway_explains_a_bad_upstream_headers_file(tmp_path):
    headers = tmp_path / "upstream-headers"
    headers.write_text("# credentials for the upstream\nAuthorization Bearer s3cret\n")
    missing = run("gateway", "--upstream", "http://127.0.0.1:9/mcp", "--issuer", "http://127.0.0.1:9", "--jwks-uri", "http://127.0.0.1:9/jwks",
                  "--upstream-headers-file", str(tmp_path / "absent"))
    malformed = run("gateway", "--upstream", "http://127.0.0.1:9/mcp", "--issuer", "http://127.0.0.1:9", "--jwks-uri", "http://127.0.0.1:9/jwks",
                    "--upstream-headers-file", str(headers))
    assert missing.returncode == 1 and "cannot read --upstream-headers-file" in missing.stderr
    assert malformed.returncode == 1 and "is not a 'Name: value' header line" in malformed.stderr
    assert "s3cret" not in malformed.stderr, "a credential in the file is never echoed"
    for result in (missing, malformed):
        assert_no_traceback(result)


def test_gateway_explains_a_bad_session_secret(tmp_path):
    short = tmp_path / "session-secret"
    short.write_text("tooshort\n")
    common = ("gateway", "--upstream", "http://127.0.0.1:9/mcp", "--issuer", "http://127.0.0.1:9", "--jwks-uri", "http://127.0.0.1:9/jwks")
    missing = run(*common, "--session-secret-file", str(tmp_path / "absent"))
    too_short = run(*common, "--session-secret-file", str(short))
    from_env = run(*common, env={"GATEHOUSE_SESSION_SECRET": "tooshort"})
    assert missing.returncode == 1 and "cannot read the session secret from" in missing.stderr
    for result in (too_short, from_env):
        assert result.returncode == 1 and "shorter than 32 bytes" in result.stderr and "token_urlsafe" in result.stderr
        assert "tooshort" not in result.stderr, "the secret itself is never echoed"
    for result in (missing, too_short, from_env):
        assert_no_traceback(result)
