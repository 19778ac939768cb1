"""``gatehouse connect|tools|call`` against a real ``gatehouse serve``, signing in through headless Chromium (issue 4).

Everything runs as users run it: ``gatehouse serve`` and every CLI command are separate
processes, each CLI command with ``--storage-dir`` of its own. The CLI's browser is the
``BROWSER`` program written below (started by Python's ``webbrowser``): it only hands the URL it
is given to the test, through a file, and the test opens that URL in Chromium with Playwright,
signs in on the Gatehouse page and answers the consent page. A program asked to open a second
URL fails loudly (it records ``opened-again`` and exits 1), so "no new login" is checked, not assumed.

A server that needs no auth: tests/client/test_cli_commands.py::test_a_server_that_needs_no_auth_just_works.
Screenshots of the pages the CLI's login shows land in ``tests/browser/screenshots/cli-*.png`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.browser.conftest import SCREENSHOTS, TIMEOUT_MS
from tests.conftest import free_socket

try:
    from playwright.sync_api import expect
except ImportError:  # the ``chromium`` fixture reports the missing component
    expect = None

pytestmark = pytest.mark.browser

BIN = Path(sys.executable).parent / "gatehouse"
GATEHOUSE = [str(BIN)] if BIN.is_file() else [sys.executable, "-m", "gatehouse.cli"]
USERNAME, PASSWORD = "alice", "correct horse battery"
SHORT_TTL = 5
HANDOFF_VARIABLE = "GATEHOUSE_TEST_HANDOFF"

BROWSER_PROGRAM = f"""#!/bin/sh
# The user's browser for `gatehouse`: hands the URL to the test, which shows it in Chromium.
# Asked a second time (a new login nobody expected), it says so and fails.
dir="${HANDOFF_VARIABLE}"
if [ -e "$dir/opened" ]; then
  printf '%s\\n' "$1" >> "$dir/opened-again"
  echo "test browser: asked to open a second login URL" >&2
  exit 1
fi
printf '%s\\n' "$1" > "$dir/.opened.tmp" && mv "$dir/.opened.tmp" "$dir/opened"
"""


# --- gatehouse serve, as a process ---------------------------------------------------------


@dataclass
class Served:
    """One ``gatehouse serve`` process with its own data dir (SQLite) and one account."""

    base_url: str
    data_dir: Path
    process: subprocess.Popen
    log: Path

    @property
    def resource(self) -> str:
        """The guarded demo notes MCP server the AS serves itself."""
        return f"{self.base_url}/mcp"

    def audit_count(self, event: str) -> int:
        """How many ``event`` rows the AS has written to its audit log (e.g. ``token.refreshed``)."""
        from sqlalchemy import create_engine, func, select

        from gatehouse.store.models import AuditEvent

        engine = create_engine(f"sqlite:///{self.data_dir / 'gatehouse.db'}")
        try:
            with engine.connect() as connection:
                return connection.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.event == event))
        finally:
            engine.dispose()


def serve_environment(**settings) -> dict[str, str]:
    """No ``GATEHOUSE_*`` from outside the test (no foreign database or secret), plus ``settings``."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("GATEHOUSE_")}
    values = {"failed_login_per_minute": 1000, "failed_client_auth_per_minute": 1000, "registration_rate_per_minute": 1000,
              **settings}
    environment.update({f"GATEHOUSE_{name.upper()}": str(value) for name, value in values.items()})
    return environment


def start_serve(root: Path, *, with_user: bool = True, **settings) -> Served:
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    environment = serve_environment(**settings)
    if with_user:
        added = subprocess.run([*GATEHOUSE, "users", "add", USERNAME, "--password-stdin", "--data-dir", str(data_dir)],
                               input=PASSWORD + "\n", env=environment, cwd=root, capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    log = root / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*GATEHOUSE, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"],
            env=environment, cwd=root, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gatehouse serve exited ({process.returncode}): {log.read_text()}")
        try:
            if httpx2.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return Served(base_url, data_dir, process, log)
        except httpx2.HTTPError:
            time.sleep(0.1)
    stop_serve(process)
    raise AssertionError(f"gatehouse serve did not start within 90 s: {log.read_text()}")


def stop_serve(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def notes_as(tmp_path_factory):
    served = start_serve(tmp_path_factory.mktemp("notes-as"))
    yield served
    stop_serve(served.process)


@pytest.fixture(scope="module")
def second_as(tmp_path_factory):
    """Another AS, for logins that end without a token while the store holds ``notes_as``'s credentials."""
    served = start_serve(tmp_path_factory.mktemp("second-as"))
    yield served
    stop_serve(served.process)


# --- the CLI and its browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_program(tmp_path_factory) -> Path:
    program = tmp_path_factory.mktemp("bin") / "handoff-browser"
    program.write_text(BROWSER_PROGRAM)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


@dataclass
class Cli:
    """Runs ``gatehouse`` with one credential store and one browser hand-off folder."""

    storage: Path
    handoff: Path
    browser: Path

    def environment(self) -> dict[str, str]:
        environment = {name: value for name, value in os.environ.items()
                       if name not in ("GATEHOUSE_CLIENT_SECRET", "GATEHOUSE_CREDENTIALS_DIR")}
        environment.update({"BROWSER": str(self.browser), HANDOFF_VARIABLE: str(self.handoff),
                            "GATEHOUSE_CREDENTIALS_BACKEND": "file"})  # never the developer's own OS keyring
        return environment

    def argv(self, args) -> list[str]:
        return [*GATEHOUSE, *args, "--storage-dir", str(self.storage)]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(args), env=self.environment(), cwd=self.handoff, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=180)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(args), env=self.environment(), cwd=self.handoff, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def opened(self) -> list[str]:
        """The URLs the CLI had the browser open (the first only: a second one goes to ``opened_again``)."""
        path = self.handoff / "opened"
        return path.read_text().splitlines() if path.exists() else []

    def opened_again(self) -> list[str]:
        path = self.handoff / "opened-again"
        return path.read_text().splitlines() if path.exists() else []

    def wait_for_browser(self, process: subprocess.Popen, timeout: float = 120) -> str:
        """The URL the CLI handed to its browser; fails with the CLI's output if it ends first."""
        deadline = time.monotonic() + timeout
        while not self.opened():
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"gatehouse exited ({process.returncode}) before opening the browser:\n{err}{out}")
            if time.monotonic() > deadline:
                process.kill()
                out, err = process.communicate()
                raise AssertionError(f"gatehouse opened no browser within {timeout:g} s:\n{err}{out}")
            time.sleep(0.05)
        return self.opened()[0]


def finish(process: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"gatehouse did not finish within {timeout:g} s:\n{err}{out}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def make_cli(root: Path, browser_program: Path) -> Cli:
    root.mkdir(parents=True, exist_ok=True)
    (root / "handoff").mkdir()
    return Cli(root / "credentials", root / "handoff", browser_program)


@pytest.fixture
def cli(tmp_path, browser_program) -> Cli:
    return make_cli(tmp_path, browser_program)


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def answer_in_chromium(context, url: str, decision: str, screenshots: str | None = None):
    """What a person does with the URL the CLI opened: sign in, then Allow or Deny. Returns the page,
    left on the CLI's own loopback page (its redirect URI)."""
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert redirect_uri.startswith("http://127.0.0.1:"), redirect_uri
    page = context.new_page()
    login = page.goto(url)
    assert login.status == 200 and urlsplit(page.url).path == "/login", page.url
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    if screenshots:
        shoot(page, f"{screenshots}-login")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Allow Gatehouse CLI to use your account?")
    expect(page.locator("dl.facts")).to_contain_text(urlsplit(redirect_uri).netloc)
    if screenshots:
        shoot(page, f"{screenshots}-consent")
    page.get_by_role("button", name=decision, exact=True).click()
    page.wait_for_url(lambda landed: landed.startswith(redirect_uri + "?"))
    return page


def sign_in_through_chromium(cli: Cli, context, server: Served, screenshots: str | None = None):
    """``gatehouse connect URL``, approved in Chromium; returns the finished command and the page it left."""
    process = cli.start("connect", server.resource, "--timeout", "150")
    url = cli.wait_for_browser(process)
    try:
        page = answer_in_chromium(context, url, "Allow", screenshots)
    except BaseException:
        process.kill()
        raise
    return finish(process), page


@pytest.fixture(scope="module")
def signed_in(chromium, notes_as, browser_program, tmp_path_factory):
    """One ``gatehouse connect`` to ``notes_as`` approved in Chromium; its store then holds a real login."""
    cli = make_cli(tmp_path_factory.mktemp("signed-in"), browser_program)
    context = chromium.new_context(viewport={"width": 1024, "height": 768})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        connected, page = sign_in_through_chromium(cli, context, notes_as, screenshots="cli")
        assert connected.returncode == 0, connected.stderr
        expect(page.get_by_role("heading", level=1)).to_have_text("Signed in")
        expect(page.locator("body")).to_contain_text("You can close this tab.")
        shoot(page, "cli-signed-in")
    finally:
        context.close()
    return cli, connected


# --- what the tests check --------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_kept(root: Path, before: dict[str, bytes]) -> None:
    """No stored credential lost: every file that was there is there, byte for byte."""
    after = snapshot(root)
    assert {name: after.get(name) for name in before} == before


def assert_explained(result: subprocess.CompletedProcess, words: str, code: int = 1, progress: bool = False) -> str:
    """Exit ``code``, nothing on stdout, no traceback, and the explanation in one or two plain lines.

    ``progress``: the login's own progress lines ("Opening the browser…", the URL, "Waiting…")
    precede the explanation; they are not part of it."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    if progress:
        lines = lines[next(i for i, line in enumerate(lines) if line.startswith("error: ")):]
    assert 1 <= len(lines) <= 2, result.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    return errors[0]


@pytest.fixture
def seeded(signed_in, tmp_path, browser_program) -> tuple[Cli, dict[str, bytes]]:
    """A CLI whose store holds a copy of ``signed_in``'s credentials, and their bytes."""
    cli = make_cli(tmp_path / "seeded", browser_program)
    shutil.copytree(signed_in[0].storage, cli.storage)
    return cli, snapshot(cli.storage)


def stored_entry(storage: Path, resource: str):
    from gatehouse.client.storage import CredentialStore

    [entry] = CredentialStore(storage).find(resource)
    return entry


# --- tests -------------------------------------------------------------------------------------


def test_connect_tools_and_call_after_one_login_in_chromium(signed_in, notes_as):
    cli, connected = signed_in
    assert connected.returncode == 0, connected.stderr
    assert f"Connected to Gatehouse notes 0.1.0 at {notes_as.resource}" in connected.stdout
    assert "scopes        notes:read notes:write" in connected.stdout
    assert "Opening the browser…" in connected.stderr and "Traceback" not in connected.stderr
    assert len(cli.opened()) == 1 and cli.opened()[0].startswith(f"{notes_as.base_url}/authorize?")
    entry = stored_entry(cli.storage, notes_as.resource)
    assert (entry.issuer, entry.resource) == (notes_as.base_url, notes_as.resource) and entry.tokens.refresh_token

    # each command below is a new process: a restarted client, which must need no new login
    listed = cli.run("tools", notes_as.resource, "--json", "--timeout", "10")
    assert listed.returncode == 0, listed.stderr
    tools = {tool["name"]: tool for tool in json.loads(listed.stdout)}
    assert {"add_note", "list_notes"} <= set(tools) and set(tools["add_note"]["inputSchema"]["required"]) == {"title", "body"}

    added = cli.run("call", notes_as.resource, "add_note", "--arg", "title=From Chromium", "--arg", "body=signed in once",
                    "--timeout", "10")
    assert added.returncode == 0, added.stderr
    notes = cli.run("call", notes_as.resource, "list_notes", "--json", "--timeout", "10")
    assert notes.returncode == 0, notes.stderr
    assert [note["title"] for note in json.loads(notes.stdout)["structuredContent"]["result"]] == ["From Chromium"]

    assert cli.opened_again() == [] and len(cli.opened()) == 1
    assert "Opening the browser" not in listed.stderr + added.stderr + notes.stderr
    assert notes_as.audit_count("token.refreshed") == 0 and notes_as.audit_count("client.registered") == 1


def test_an_expired_access_token_is_refreshed_silently(new_context, cli, tmp_path):
    short_lived = start_serve(tmp_path / "short-lived-as", access_token_ttl=SHORT_TTL)
    try:
        connected, _ = sign_in_through_chromium(cli, new_context(), short_lived)
        assert connected.returncode == 0, connected.stderr
        first = stored_entry(cli.storage, short_lived.resource).tokens
        assert first.expires_in == SHORT_TTL
        refreshes = short_lived.audit_count("token.refreshed")
        time.sleep(max(0.0, first.expires_at - time.time()) + 0.5)

        called = cli.run("call", short_lived.resource, "list_notes", "--json", "--timeout", "10")
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout).get("isError") is not True
        assert short_lived.audit_count("token.refreshed") == refreshes + 1
        assert cli.opened_again() == [] and len(cli.opened()) == 1
        assert "Refreshing the access token…" in called.stderr and "Opening the browser" not in called.stderr
        second = stored_entry(cli.storage, short_lived.resource).tokens
        assert second.access_token != first.access_token and second.refresh_token != first.refresh_token
    finally:
        stop_serve(short_lived.process)


# --- bad input: one or two plain lines, the right exit code, nothing stored lost ---------------


def test_the_user_denies_consent(seeded, second_as, new_context, notes_as):
    cli, before = seeded
    denials = second_as.audit_count("grant.denied")
    process = cli.start("connect", second_as.resource, "--timeout", "150")
    url = cli.wait_for_browser(process)
    try:
        page = answer_in_chromium(new_context(), url, "Deny")
    except BaseException:
        process.kill()
        raise
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in did not complete")
    expect(page.locator("body")).to_contain_text("You can close this tab.")
    shoot(page, "cli-declined")
    result = finish(process)

    assert_explained(result, f"sign-in was declined at {second_as.base_url} (access_denied", progress=True)
    assert second_as.audit_count("grant.denied") == denials + 1
    assert_kept(cli.storage, before)
    assert stored_entry(cli.storage, second_as.resource).tokens is None
    still = cli.run("tools", notes_as.resource, "--json", "--timeout", "10")  # the kept login still works
    assert still.returncode == 0 and "add_note" in still.stdout, still.stderr
    assert cli.opened_again() == []


def test_a_closed_browser_times_out(seeded, second_as):
    cli, before = seeded
    started = time.monotonic()
    result = cli.run("connect", second_as.resource, "--timeout", "3")
    assert_explained(result, "no answer from the browser within 3 s", progress=True)
    assert time.monotonic() - started < 90
    assert len(cli.opened()) == 1 and cli.opened()[0].startswith(f"{second_as.base_url}/authorize?")
    assert_kept(cli.storage, before)


def test_an_unreachable_server(seeded):
    cli, before = seeded
    closed = free_socket()  # bound, never listening: connections are refused
    try:
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/mcp"
        result = cli.run("call", url, "list_notes", "--timeout", "10")
    finally:
        closed.close()
    assert_explained(result, f"cannot reach {url}")
    assert cli.opened() == []
    assert_kept(cli.storage, before)


@pytest.fixture(params=["gatehouse-serve", "stand-in"])
def refusing_registration(request, tmp_path, loopback_server):
    """An AS that refuses to register the CLI: ``gatehouse serve`` allowing no registrations (429), and a
    loopback stand-in AS whose registration is closed (403 access_denied)."""
    if request.param == "gatehouse-serve":
        served = start_serve(tmp_path / "closed-as", with_user=False, registration_rate_per_minute=0)
        try:
            yield served.resource, served.base_url, "temporarily_unavailable"
        finally:
            stop_serve(served.process)
        return
    from tests.client.standin import StandIn

    standin = StandIn(registration_refused_by={"as1"})
    with loopback_server(standin.app()) as base_url:
        standin.base_url = base_url
        yield standin.resource, standin.issuer("as1"), "access_denied: registration is closed"


def test_an_authorization_server_refusing_registration(seeded, refusing_registration):
    cli, before = seeded
    resource, issuer, reason = refusing_registration
    result = cli.run("connect", resource, "--timeout", "10")
    line = assert_explained(result, f"{issuer} refused to register this client (")
    assert reason in line
    assert cli.opened() == []
    assert_kept(cli.storage, before)


def test_a_corrupt_token_file(seeded, notes_as):
    cli, _ = seeded
    path = stored_entry(cli.storage, notes_as.resource).path
    path.write_bytes(b'{"format": 1, "tokens": {"access_token": 4\x00')
    before = snapshot(cli.storage)

    result = cli.run("call", notes_as.resource, "list_notes", "--timeout", "10")
    line = assert_explained(result, f"cannot read the stored credentials in {path}")
    assert f"`gatehouse logout {notes_as.resource}`" in line
    assert cli.opened() == []
    assert_kept(cli.storage, before)

    logout = cli.run("logout", notes_as.resource)  # what the line says to do: the garbage is set aside, kept
    assert logout.returncode == 0, logout.stderr
    assert not path.exists() and path.with_name(path.name + ".corrupt").read_bytes() == before[str(path.relative_to(cli.storage))]
