"""``gatehouse connect|tools|call|bridge``: reach an MCP server as a person or a script, logging in when it asks.

The login itself (discovery, registration, PKCE, stored tokens: CL-1…CL-17) is ``gatehouse.client.auth``;
a server that never answers 401 is used without OAuth. Exit codes: 0 ok, 1 failure (one or two plain
lines on stderr, never a traceback), 2 usage error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gatehouse.client.errors import ClientError
from gatehouse.client.options import ClientOptions
from gatehouse.client.tool_arguments import ArgumentOptions, BadArguments, required_arguments
from gatehouse.secret_files import read_secret_file

SECRET_ENV = "GATEHOUSE_CLIENT_SECRET"

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

T = TypeVar("T")

ServerUrl = Annotated[str, typer.Argument(help="The MCP server's Streamable HTTP endpoint, e.g. https://example.com/mcp.", show_default=False)]
ClientId = Annotated[Optional[str], typer.Option("--client-id", help="A pre-registered client_id (default: the metadata URL, else dynamic registration).", show_default=False)]
ClientSecretFile = Annotated[Optional[Path], typer.Option("--client-secret-file", exists=True, dir_okay=False, help=f"File holding the client secret (or set {SECRET_ENV}).", show_default=False)]
ClientMetadataUrl = Annotated[Optional[str], typer.Option("--client-metadata-url", help="HTTPS URL of this client's metadata document, used as its client_id (CIMD).", show_default=False)]
Scopes = Annotated[list[str], typer.Option("--scope", help="Scope to ask for (repeatable; default: what the server asks for).", show_default=False)]
ClientCredentials = Annotated[bool, typer.Option("--client-credentials", help="Log in as a machine client (client_credentials grant): no browser, no user.")]
PrivateKeyFile = Annotated[Optional[Path], typer.Option("--private-key-file", exists=True, dir_okay=False, help="Private key for private_key_jwt client authentication.", show_default=False)]
NoBrowser = Annotated[bool, typer.Option("--no-browser", help="Print the login URL and wait instead of opening a browser.")]
Headless = Annotated[bool, typer.Option("--headless", help="Follow the login redirects without a browser (automation, auto-approving servers).")]
LoginTimeout = Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the login to finish.")]
StorageDir = Annotated[Optional[Path], typer.Option("--storage-dir", help="Credential store (default: the user's data dir; env GATEHOUSE_CREDENTIALS_DIR).", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def connect(
    url: ServerUrl,
    client_id: ClientId = None,
    client_secret_file: ClientSecretFile = None,
    client_metadata_url: ClientMetadataUrl = None,
    scope: Scopes = [],
    client_credentials: ClientCredentials = False,
    private_key_file: PrivateKeyFile = None,
    no_browser: NoBrowser = False,
    headless: Headless = False,
    timeout: LoginTimeout = 300.0,
    storage_dir: StorageDir = None,
    as_json: AsJson = False,
) -> None:
    """Log in to an MCP server (when it asks) and show who it is, what it offers and the scopes granted."""
    options = client_options(client_id, client_secret_file, client_metadata_url, scope, client_credentials,
                             private_key_file, no_browser, headless, timeout, storage_dir)

    async def describe(client, auth) -> dict:
        info = client.server_info
        tokens = access_token_of(auth)
        return {
            "url": url,
            "server": info.model_dump(mode="json", by_alias=True, exclude_none=True) if info else None,
            "protocol_version": client.protocol_version,
            "capabilities": client.server_capabilities.model_dump(mode="json", by_alias=True, exclude_none=True),
            "instructions": client.instructions,
            "authenticated": tokens is not None,
            "scopes": sorted(tokens.scope.split()) if tokens is not None and tokens.scope else None,
        }

    summary = with_client(url, options, describe)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    server = summary["server"] or {}
    name = server.get("title") or server.get("name") or "an unnamed server"
    out.print(f"Connected to [bold]{escape(name)}[/] {escape(server.get('version', ''))} at {escape(url)}")
    out.print(f"  protocol      {summary['protocol_version']}")
    out.print(f"  capabilities  {', '.join(sorted(summary['capabilities'])) or 'none'}")
    if not summary["authenticated"]:
        out.print("  scopes        none: the server asked for no login")
    elif summary["scopes"] is None:
        out.print("  scopes        not stated in the token response")
    else:
        out.print(f"  scopes        {' '.join(summary['scopes'])}")


def tools(
    url: ServerUrl,
    client_id: ClientId = None,
    client_secret_file: ClientSecretFile = None,
    client_metadata_url: ClientMetadataUrl = None,
    scope: Scopes = [],
    client_credentials: ClientCredentials = False,
    private_key_file: PrivateKeyFile = None,
    no_browser: NoBrowser = False,
    headless: Headless = False,
    timeout: LoginTimeout = 300.0,
    storage_dir: StorageDir = None,
    as_json: AsJson = False,
) -> None:
    """List the tools an MCP server offers you: name, description and required arguments."""
    options = client_options(client_id, client_secret_file, client_metadata_url, scope, client_credentials,
                             private_key_file, no_browser, headless, timeout, storage_dir)
    listed = with_client(url, options, lambda client, auth: list_all_tools(client))
    if as_json:
        print(json.dumps([tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed], indent=2))
        return
    if not listed:
        out.print(f"{escape(url)} offers you no tools.")
        return
    table = Table("tool", "description", "required arguments")
    table.columns[0].no_wrap = True
    for tool in listed:
        summary = (tool.description or "").strip().splitlines()
        table.add_row(escape(tool.name), escape(summary[0] if summary else ""), escape(required_arguments(tool.input_schema)))
    out.print(table)


def call(
    url: ServerUrl,
    tool: Annotated[str, typer.Argument(help="The tool's name (see `gatehouse tools URL`).", show_default=False)],
    arg: Annotated[list[str], typer.Option("--arg", help="Argument NAME=VALUE (repeatable); VALUE is JSON when it parses, else text.", show_default=False)] = [],
    json_args: Annotated[Optional[str], typer.Option("--json-args", help="All arguments as one JSON object.", show_default=False)] = None,
    client_id: ClientId = None,
    client_secret_file: ClientSecretFile = None,
    client_metadata_url: ClientMetadataUrl = None,
    scope: Scopes = [],
    client_credentials: ClientCredentials = False,
    private_key_file: PrivateKeyFile = None,
    no_browser: NoBrowser = False,
    headless: Headless = False,
    timeout: LoginTimeout = 300.0,
    storage_dir: StorageDir = None,
    as_json: AsJson = False,
) -> None:
    """Call one tool and print its result; a tool error exits 1 with the tool's message."""
    try:
        arguments = ArgumentOptions.parse(arg, json_args)
    except BadArguments as exc:
        usage(str(exc))
    options = client_options(client_id, client_secret_file, client_metadata_url, scope, client_credentials,
                             private_key_file, no_browser, headless, timeout, storage_dir)

    async def call_tool(client, auth):
        listed = {t.name: t for t in await list_all_tools(client)}
        if tool not in listed:
            raise ClientError(f"{url} offers you no tool named {tool!r}; see `gatehouse tools {url}`")
        return await client.call_tool(tool, arguments.for_tool(listed[tool].input_schema))

    result = with_client(url, options, call_tool)
    if as_json:
        print(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))
    elif result.is_error:
        fail(f"the tool {tool!r} failed: {result_text(result) or 'no message'}")
    else:
        print_result(result)
    if result.is_error:
        raise typer.Exit(1)


def bridge(
    url: ServerUrl,
    client_id: ClientId = None,
    client_secret_file: ClientSecretFile = None,
    client_metadata_url: ClientMetadataUrl = None,
    scope: Scopes = [],
    client_credentials: ClientCredentials = False,
    private_key_file: PrivateKeyFile = None,
    no_browser: NoBrowser = False,
    headless: Headless = False,
    timeout: LoginTimeout = 300.0,
    storage_dir: StorageDir = None,
) -> None:
    """Serve MCP on stdin/stdout and relay it to URL, logging in when it asks: for hosts that only run stdio servers.

    Host config: {"command": "gatehouse", "args": ["bridge", URL]}. Status and errors go to stderr.
    """
    import anyio

    from gatehouse.client.bridge import root_cause, run_bridge

    options = client_options(client_id, client_secret_file, client_metadata_url, scope, client_credentials,
                             private_key_file, no_browser, headless, timeout, storage_dir)
    quiet_library_logs()
    status = LoginStatus(err)
    auth = login_auth(url, options, status)
    err.print(f"gatehouse bridge: relaying MCP on stdin/stdout to {url}")
    if sys.stdin.isatty():
        err.print("gatehouse bridge: stdin is a terminal; an MCP host runs this command, e.g. "
                  f'{{"command": "gatehouse", "args": ["bridge", "{url}"]}}')
    try:
        code = anyio.run(run_bridge, url, auth)
    except KeyboardInterrupt:
        code = 1
    except Exception as exc:  # noqa: BLE001 - e.g. the host closed our stdout; one line, no traceback
        error = root_cause(exc)
        fail(f"the bridge stopped: {type(error).__name__}: {error}")
    finally:
        status.stop()
    raise typer.Exit(code)


# --- shared by the commands ----------------------------------------------------------------------


def usage(message: str) -> NoReturn:
    err.print(f"error: {message}")
    raise typer.Exit(2)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"error: {message}")
    raise typer.Exit(code)


def client_options(
    client_id: str | None, client_secret_file: Path | None, client_metadata_url: str | None, scopes: list[str],
    client_credentials: bool, private_key_file: Path | None, no_browser: bool, headless: bool, timeout: float,
    storage_dir: Path | None,
) -> ClientOptions:
    secret = read_client_secret(client_secret_file)
    if client_credentials and not client_id:
        usage("--client-credentials needs the machine client's --client-id")
    if client_credentials and not (secret or private_key_file):
        usage(f"--client-credentials needs --client-secret-file (or {SECRET_ENV}) or --private-key-file")
    if private_key_file and not client_credentials:
        usage("--private-key-file is for --client-credentials")
    if client_secret_file and not client_id:
        usage("--client-secret-file needs its --client-id")
    if headless and no_browser:
        usage("give --headless or --no-browser, not both")
    return ClientOptions(
        client_id=client_id,
        client_secret=secret,
        client_metadata_url=client_metadata_url,
        scopes=tuple(s for item in scopes for s in item.split()),
        client_credentials=client_credentials,
        private_key_file=private_key_file,
        open_browser=not (no_browser or headless),
        headless=headless,
        login_timeout=timeout,
        storage_dir=storage_dir,
    )


def read_client_secret(path: Path | None) -> str | None:
    """From ``path``, else ``GATEHOUSE_CLIENT_SECRET``; never from the command line, where others can read it."""
    if path is None:
        return os.environ.get(SECRET_ENV, "").strip() or None
    try:
        return read_secret_file(path)
    except ValueError as exc:
        fail(str(exc))


def quiet_library_logs() -> None:
    """The SDK and httpx2 log transport hiccups with tracebacks; the commands say what matters themselves."""
    for name in ("mcp", "httpx2", "httpcore"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False


class LoginStatus:
    """The login's progress lines on stderr: the countdown as one live line on a terminal, else once."""

    COUNTDOWN = re.compile(r"\(\d+:\d\d left\)")

    def __init__(self, console: Console):
        self.console = console
        self.live = None
        self.waiting = False

    def __call__(self, line: str) -> None:
        if not self.COUNTDOWN.search(line):
            self.stop()
            self.console.print(line)
        elif self.console.is_terminal:
            if self.live is None:
                self.live = self.console.status(line)
                self.live.start()
            else:
                self.live.update(line)
        elif not self.waiting:
            self.console.print(line)
        self.waiting = bool(self.COUNTDOWN.search(line))

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def login_auth(url: str, options: ClientOptions, status: LoginStatus):
    """The auth that logs in when ``url`` answers 401; status lines go to stderr, never stdout."""
    if not url.startswith(("http://", "https://")):
        usage(f"{url!r} is not an http:// or https:// URL")
    from gatehouse.client.auth import create_auth

    try:
        return create_auth(url, options, status=status)
    except ClientError as exc:
        fail(str(exc), code=exc.exit_code)


def with_client(url: str, options: ClientOptions, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``work(client, auth)`` in an MCP session with ``url``; any failure ends the command."""
    import anyio
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    from gatehouse.client.bridge import ExplainedAuth, describe_failure, open_http_client, root_cause

    quiet_library_logs()
    status = LoginStatus(err)
    auth = login_auth(url, options, status)
    http = open_http_client(auth)
    explained: ExplainedAuth = http.auth

    async def session() -> T:
        try:
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                return await work(client, auth)
        finally:
            status.stop()

    try:
        return anyio.run(session)
    except KeyboardInterrupt:
        fail("interrupted")
    except Exception as exc:  # noqa: BLE001 - every failure ends as one plain line
        error = root_cause(exc)
        if isinstance(error, typer.Exit):
            raise error from None
        message = describe_failure(error, url)
        if isinstance(error, MCPError) and explained.refusals:
            message = f"{message}: {list(explained.refusals.values())[-1]}"
        fail(message, code=getattr(error, "exit_code", 1) if isinstance(error, ClientError) else 1)


async def list_all_tools(client) -> list:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def access_token_of(auth):
    """The token response in use (its ``scope`` as RFC 6749 section 5.1 states it), or None without a login."""
    return getattr(getattr(auth, "context", None), "current_tokens", None)


def result_text(result) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


def print_result(result) -> None:
    """Text blocks as they are, or the structured content as JSON when the text only repeats it."""
    structured = result.structured_content
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    repeats = structured is not None and all(_same_json(text, structured) for text in texts)
    for line in ([json.dumps(structured, indent=2)] if repeats else texts):
        print(line)
    for block in result.content:
        kind = getattr(block, "type", None)
        if kind == "resource_link":
            print(f"[resource] {block.uri}")
        elif kind == "resource":
            print(getattr(block.resource, "text", None) or f"[resource] {block.resource.uri}")
        elif kind != "text":
            print(f"[{kind}] {getattr(block, 'mime_type', '')}".rstrip())


def _same_json(text: str, value: Any) -> bool:
    try:
        return json.loads(text) == value
    except ValueError:
        return False
