"""The ``gatehouse`` command: one Typer app, each command a thin call into a role package.

Exit codes: 0 ok, 1 failure, 2 usage error. Every error says what went wrong and what to do.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gatehouse.client import commands as client_commands
from gatehouse.client.tokens_cli import logout, tokens_app
from gatehouse.config import Settings
from gatehouse.doctor.command import doctor
from gatehouse.secret_files import read_secret_file

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Real OAuth in front of MCP servers.")
users_app = typer.Typer(no_args_is_help=True, help="Local user accounts.")
clients_app = typer.Typer(no_args_is_help=True, help="Pre-registered OAuth clients.")
keys_app = typer.Typer(no_args_is_help=True, help="Token signing keys.")
db_app = typer.Typer(no_args_is_help=True, help="The database.")
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(tokens_app, name="tokens")
app.command("logout")(logout)
app.command("connect")(client_commands.connect)
app.command("tools")(client_commands.tools)
app.command("call")(client_commands.call)
app.command("bridge")(client_commands.bridge)
app.command("doctor")(doctor)

out = Console()
err = Console(stderr=True)

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="State directory (env GATEHOUSE_DATA_DIR).", show_default=False)]


def fail(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err.print(f"[dim]→ {hint}[/]", highlight=False)
    raise typer.Exit(1)


def load_settings(**overrides) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        fail(f"invalid setting {where}: {first['msg']}", "check the flag, the GATEHOUSE_* variable or gatehouse.toml")
        raise


def open_context(settings: Settings):
    from sqlalchemy.exc import OperationalError

    from gatehouse.authserver.context import build_context
    from gatehouse.authserver.keys import KeyUnwrapError
    from gatehouse.client.errors import StorageError
    from gatehouse.instance_secrets import SecretKeyError

    try:
        return build_context(settings)
    except SecretKeyError as exc:
        fail(str(exc))
    except StorageError as exc:  # another process held the start-up lock too long
        fail(str(exc), "if no other gatehouse process is starting, check the data dir's file system")
    except KeyUnwrapError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(
            f"cannot open the database {settings.effective_database_url.split('@')[-1]}: {exc.orig}",
            "check GATEHOUSE_DATABASE_URL / --data-dir and that the database server is running",
        )
    except PermissionError as exc:
        fail(f"cannot write to {exc.filename}", "choose a --data-dir you can write to")


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on.", show_default="127.0.0.1")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on.", show_default="8000")] = None,
    data_dir: DataDir = None,
    issuer: Annotated[Optional[str], typer.Option(help="Public URL of this server (behind a proxy, or many instances).")] = None,
    demo_user: Annotated[Optional[str], typer.Option(help="On a new data dir, create this account and print its password once.")] = None,
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info",
    log_format: Annotated[Optional[str], typer.Option(
        help="Logs on stderr as 'text' or 'json', one object a line (env GATEHOUSE_LOG_FORMAT).", show_default="text")] = None,
    admin_port: Annotated[Optional[int], typer.Option(
        help="Serve /metrics (no authentication) on this port of --admin-host (env GATEHOUSE_ADMIN_PORT).", show_default=False)] = None,
    admin_host: Annotated[Optional[str], typer.Option(
        help="Interface of the admin port; keep it private (env GATEHOUSE_ADMIN_HOST).", show_default="127.0.0.1")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes serving on one port; they share the data dir or database and the secret.")] = 1,
    forwarded_allow_ips: Annotated[Optional[str], typer.Option(
        help="Proxies trusted to set X-Forwarded-For: comma-separated IPs or networks, or * (env GATEHOUSE_FORWARDED_ALLOW_IPS).",
        show_default=False,
    )] = None,
) -> None:
    """Run the authorization server and the guarded demo MCP server at /mcp."""
    import uvicorn

    from gatehouse.ops import worker_metrics

    worker_metrics.prepare(workers)  # before anything imports prometheus_client (gatehouse.serve does)
    from gatehouse.authserver.users import count_users, create_user
    from gatehouse.serve import create_embedded_app, worker_environment

    overrides = dict(host=host, port=port, data_dir=data_dir.resolve() if data_dir else None, issuer=issuer,
                     forwarded_allow_ips=forwarded_allow_ips)
    settings = load_settings(**overrides, log_format=log_format, admin_port=admin_port, admin_host=admin_host)
    log_config = configure_serve_logging(settings.log_format, log_level)
    ctx = open_context(settings)
    with ctx.unit_of_work() as session:
        if count_users(session) == 0:
            if demo_user:
                password = secrets.token_urlsafe(12)
                create_user(session, demo_user, password)
                out.print(f"Created the demo account [bold]{demo_user}[/] with password [bold]{password}[/] (shown only once).")
            else:
                out.print(
                    "No accounts yet. Add one with: "
                    f"[bold]gatehouse users add NAME --password-stdin --data-dir {settings.data_dir}[/]",
                    highlight=False,
                )
    out.print(f"Gatehouse authorization server: [bold]{ctx.issuer}[/]  (metadata at {ctx.issuer}/.well-known/oauth-authorization-server)")
    admin = start_admin_listener(settings)
    uvicorn_logging = dict(log_config=log_config, access_log=False)  # gatehouse.ops.request_log writes the access lines
    try:
        if workers == 1:
            uvicorn.run(create_embedded_app(ctx), host=settings.host, port=settings.port, log_level=log_level, proxy_headers=False,
                        **uvicorn_logging)
        else:  # each worker process builds its own app from the environment, after the set-up done here
            ctx.engine.dispose()
            os.environ.update(worker_environment(overrides))
            uvicorn.run("gatehouse.serve:create_app_from_environment", factory=True, workers=workers, host=settings.host,
                        port=settings.port, log_level=log_level, proxy_headers=False, **uvicorn_logging)
    except OSError as exc:
        fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}", "choose another --port or stop what uses it")
    finally:
        if admin is not None:
            admin.stop()


def configure_serve_logging(log_format: str, log_level: str) -> dict:
    """Gatehouse's log configuration (gatehouse.ops.request_log), applied now and handed to uvicorn."""
    import logging.config

    from gatehouse.ops.request_log import logging_config

    if log_level.upper() not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE"):
        err.print(f"error: --log-level must be one of debug, info, warning, error, critical (not {log_level!r})", highlight=False)
        raise typer.Exit(2)
    config = logging_config(log_format, "DEBUG" if log_level.upper() == "TRACE" else log_level)
    logging.config.dictConfig(config)
    return config


def start_admin_listener(settings: Settings):
    """The admin port (gatehouse.ops.admin), if asked for: in this process, which outlives the workers."""
    if settings.admin_port is None:
        return None
    from gatehouse.ops.admin import AdminListenError, AdminServer

    try:
        admin = AdminServer(settings.admin_host, settings.admin_port).start()
    except AdminListenError as exc:
        fail(exc.strerror, "choose another --admin-port or stop what uses it")
    out.print(f"Metrics: [bold]http://{settings.admin_host}:{settings.admin_port}/metrics[/] (admin port)", highlight=False)
    return admin


INTROSPECTION_SECRET_ENV = "GATEHOUSE_INTROSPECTION_CLIENT_SECRET"
SESSION_SECRET_ENV = "GATEHOUSE_SESSION_SECRET"


def token_verifier(
    issuer: str, resource: str, *, jwks_uri: str | None, algorithms: list[str], introspection_endpoint: str | None,
    introspect: bool, client_id: str | None, client_secret_file: Path | None, client_auth_method: str,
):
    """The gateway's verifier: JWTs with the AS's keys, or introspection (RFC 7662) with client credentials."""
    from gatehouse.guard import IntrospectionVerifier, JWKSKeySource, JWTVerifier
    from gatehouse.guard.gateway import discover_jwks_uri
    from gatehouse.guard.as_client import AUTH_METHODS
    from gatehouse.guard.introspection import discover_introspection_endpoint

    def usage(message: str) -> None:
        err.print(f"error: {message}", highlight=False)
        raise typer.Exit(2)

    if not (introspection_endpoint or introspect):
        if client_id or client_secret_file:
            usage("--client-id and --client-secret-file are for introspection: add --introspection-endpoint URL or --introspect")
        try:
            keys_at = jwks_uri or discover_jwks_uri(issuer)
        except LookupError as exc:
            fail(str(exc), "check --issuer, or give --jwks-uri")
        return JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(keys_at), algorithms=algorithms)
    if introspection_endpoint and introspect:
        usage("give --introspection-endpoint URL or --introspect, not both")
    if jwks_uri:
        usage("--jwks-uri is for JWT access tokens; with introspection the authorization server checks the tokens")
    if client_auth_method not in AUTH_METHODS:
        usage(f"--client-auth-method must be one of: {', '.join(AUTH_METHODS)}")
    if not client_id:
        fail("introspection needs this gateway's client credentials: give --client-id",
             "register them with `gatehouse clients add --name NAME --resource-server RESOURCE_URI`")
    secret = read_client_secret(client_secret_file)
    if introspect:
        try:
            introspection_endpoint = discover_introspection_endpoint(issuer)
        except LookupError as exc:
            fail(str(exc), "check --issuer, or give --introspection-endpoint URL")
    try:
        return IntrospectionVerifier(
            endpoint=introspection_endpoint, client_id=client_id, client_secret=secret, issuers=[issuer],
            audience=resource, auth_method=client_auth_method,
        )
    except ValueError as exc:
        fail(str(exc))


def read_session_secret(path: Path | None) -> bytes | None:
    """The gateway's session secret, from ``path``, else the environment, else None (a random one)."""
    import os

    from gatehouse.guard.sessions import MIN_SECRET_BYTES

    try:
        secret = read_secret_file(path, "session secret") if path else os.environ.get(SESSION_SECRET_ENV, "").strip()
    except ValueError as exc:
        fail(str(exc))
    if not secret:
        return None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        origin = path or SESSION_SECRET_ENV
        fail(f"the session secret in {origin} is shorter than {MIN_SECRET_BYTES} bytes",
             "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return secret.encode()


def read_client_secret(path: Path | None) -> str:
    """From ``path``, else the environment; never from the command line, where others can read it."""
    import os

    if path is None:
        secret = os.environ.get(INTROSPECTION_SECRET_ENV, "").strip()
        if not secret:
            fail(f"introspection needs the client secret: give --client-secret-file PATH or set {INTROSPECTION_SECRET_ENV}")
        return secret
    try:
        return read_secret_file(path)
    except ValueError as exc:
        fail(str(exc))


@app.command()
def gateway(
    issuer: Annotated[str, typer.Option(help="Issuer of the authorization server whose tokens are accepted.")],
    command: Annotated[Optional[list[str]], typer.Argument(help="After --: a stdio MCP server to run, one process per session.")] = None,
    upstream: Annotated[Optional[str], typer.Option(help="URL of an HTTP MCP server to protect, e.g. http://127.0.0.1:9000/mcp.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    path: Annotated[str, typer.Option(help="Path of the guarded MCP endpoint.")] = "/mcp",
    resource: Annotated[Optional[str], typer.Option(help="Public URL of the guarded endpoint (default http://HOST:PORT/PATH).")] = None,
    jwks_uri: Annotated[Optional[str], typer.Option(help="The AS's JWKS (default: from its metadata).")] = None,
    introspection_endpoint: Annotated[Optional[str], typer.Option(help="Check tokens by RFC 7662 introspection at this URL, not as JWTs.")] = None,
    introspect: Annotated[bool, typer.Option("--introspect", help="Check tokens by introspection at the endpoint the AS's metadata names.")] = False,
    client_id: Annotated[Optional[str], typer.Option("--client-id", help="This gateway's client_id at the AS, for introspection.")] = None,
    client_secret_file: Annotated[Optional[Path], typer.Option(help=f"File holding the client secret for introspection (or env {INTROSPECTION_SECRET_ENV}).")] = None,
    client_auth_method: Annotated[str, typer.Option(help="client_secret_basic or client_secret_post, for introspection.")] = "client_secret_basic",
    policy: Annotated[Optional[Path], typer.Option(help="Policy file (TOML): scopes per tool and method.")] = None,
    upstream_header: Annotated[list[str], typer.Option(help="'Name: value' sent to the upstream (repeatable).")] = [],
    upstream_headers_file: Annotated[Optional[Path], typer.Option(help="File of 'Name: value' lines sent to the upstream: credentials kept off the command line.")] = None,
    upstream_timeout: Annotated[float, typer.Option(help="Seconds to wait for the upstream's answer before a 504.")] = 300.0,
    idle_timeout: Annotated[float, typer.Option(help="Seconds after which an idle stdio session ends and its process stops.")] = 1800.0,
    identity_header: Annotated[Optional[str], typer.Option(help="Header that carries the caller's subject to the upstream.")] = None,
    algorithm: Annotated[list[str], typer.Option(help="Accepted signing algorithm (repeatable).")] = ["ES256"],
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request (costs CPU on the hot path).")] = False,
    batch_scheduling: Annotated[bool, typer.Option(help="With --upstream, on Linux: run as a SCHED_BATCH task, whose wakeups do not preempt the MCP server on its core (see gatehouse.guard.scheduling).")] = True,
    session_secret_file: Annotated[Optional[Path], typer.Option(help=f"File holding the secret that binds session ids to their users (or env {SESSION_SECRET_ENV}); share it so sessions survive a restart and work on every instance. Default: a new one per start.")] = None,
) -> None:
    """Put OAuth in front of any MCP server: an HTTP one (--upstream URL) or a stdio one (-- COMMAND…)."""
    import uvicorn

    from gatehouse.guard import Guard, Policy
    from gatehouse.guard.gateway import (
        HTTPUpstream,
        create_gateway_app,
    )
    from gatehouse.guard.policy import PolicyError
    from gatehouse.guard.scheduling import run_as_batch_task

    issuer = issuer.rstrip("/")
    resource = resource or f"http://{host}:{port}{path}"
    header_lines = [(f"--upstream-header number {n}", item) for n, item in enumerate(upstream_header, 1)]
    if upstream_headers_file:
        try:
            lines = upstream_headers_file.read_text().splitlines()
        except OSError as exc:
            fail(f"cannot read --upstream-headers-file {upstream_headers_file}: {exc.strerror}")
        header_lines += [(f"{upstream_headers_file} line {n}", line) for n, line in enumerate(lines, 1)
                         if line.strip() and not line.lstrip().startswith("#")]
    headers = []
    for origin, item in header_lines:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            fail(f"{origin} is not a 'Name: value' header line")  # the line itself may hold a credential
        headers.append((name.strip(), value.strip()))
    session_secret = read_session_secret(session_secret_file)
    try:
        rules = Policy.from_toml(policy) if policy else Policy()
    except PolicyError as exc:
        fail(str(exc))
    verifier = token_verifier(
        issuer, resource, jwks_uri=jwks_uri, algorithms=algorithm, introspection_endpoint=introspection_endpoint,
        introspect=introspect, client_id=client_id, client_secret_file=client_secret_file, client_auth_method=client_auth_method,
    )
    if bool(upstream) == bool(command):
        err.print("error: give either --upstream URL or, after --, the command of a stdio MCP server")
        raise typer.Exit(2)
    try:
        if command:
            from gatehouse.guard.stdio import StdioUpstream

            proxy = StdioUpstream(list(command), idle_timeout=idle_timeout)
        else:
            proxy = HTTPUpstream(upstream, upstream_headers=headers, identity_header=identity_header, read_timeout=upstream_timeout)
    except ValueError as exc:
        fail(str(exc))
    guard = Guard(
        resource=resource,
        authorization_servers=[issuer],
        verifier=verifier,
        policy=rules,
        session_secret=session_secret,
    )
    target = upstream or " ".join(command)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    out.print(f"Gatehouse gateway: [bold]{resource}[/] → {target}  (tokens from {issuer})", highlight=False)
    app = create_gateway_app(guard, proxy, path)
    if batch_scheduling and upstream:  # a stdio server would inherit the policy: unmeasured, so left alone
        run_as_batch_task()
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, proxy_headers=False, http=app.http_protocol)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", "choose another --port or stop what uses it")


def _resource_server(client) -> dict:
    return {"resource_server_for": client.resource_server_for} if client.resource_server_for else {}


@users_app.command("add")
def users_add(
    name: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a local account."""
    from gatehouse.authserver.users import UserError, create_user

    if not password_stdin:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    ctx = open_context(load_settings(data_dir=data_dir))
    try:
        with ctx.unit_of_work() as session:
            create_user(session, name, password)
    except UserError as exc:
        fail(str(exc))
    out.print(f"Created user [bold]{name}[/].")


@clients_app.command("add")
def clients_add(
    name: Annotated[str, typer.Option("--name", help="Name shown to users on the consent page.")],
    redirect_uri: Annotated[list[str], typer.Option("--redirect-uri", help="Allowed redirect URI (repeatable).")] = [],
    confidential: Annotated[bool, typer.Option("--confidential", help="Issue a client secret (client_secret_basic).")] = False,
    grant_type: Annotated[list[str], typer.Option("--grant-type", help="Grant type (repeatable).")] = [],
    scope: Annotated[Optional[str], typer.Option(help="Scopes the client may request (space-separated).")] = None,
    jwks_file: Annotated[Optional[Path], typer.Option(help="Public JWKS for private_key_jwt client authentication.")] = None,
    client_id: Annotated[Optional[str], typer.Option("--client-id", help="Choose the client_id (default: random).")] = None,
    resource_server: Annotated[Optional[str], typer.Option(
        "--resource-server", metavar="URI",
        help="Register a resource server that may introspect the tokens issued for this resource (RFC 7662) and, with "
             "[[upstream]] providers, exchange them for the users' upstream tokens (RFC 8693).",
    )] = None,
    data_dir: DataDir = None,
) -> None:
    """Pre-register a client (AS-7). Prints the client_id and, once, its secret."""
    from authlib.oauth2.rfc7591.errors import (
        InvalidClientMetadataError,
        InvalidRedirectURIError,
    )
    from sqlalchemy.exc import IntegrityError

    from gatehouse.authserver.clients import (
        KIND_STATIC,
        store_client,
        validate_metadata,
    )
    from gatehouse.authserver.resources import TargetError

    metadata: dict = {"client_name": name, "redirect_uris": redirect_uri}
    metadata["grant_types"] = grant_type or (["client_credentials"] if not redirect_uri else ["authorization_code", "refresh_token"])
    if scope:
        metadata["scope"] = scope
    if jwks_file:
        try:
            metadata["jwks"] = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"cannot read a JWKS from {jwks_file}: {exc}")
        metadata["token_endpoint_auth_method"] = "private_key_jwt"
    else:
        confidential = confidential or resource_server is not None
        metadata["token_endpoint_auth_method"] = "client_secret_basic" if confidential or "client_credentials" in metadata["grant_types"] else "none"
    if not redirect_uri:
        del metadata["redirect_uris"]
    try:
        metadata = validate_metadata(metadata)
    except (InvalidClientMetadataError, InvalidRedirectURIError) as exc:
        fail(exc.description or exc.error)
    if resource_server is not None and not grant_type and not redirect_uri:
        metadata.update(grant_types=[], response_types=[])  # introspection only: no token of its own
    ctx = open_context(load_settings(data_dir=data_dir))
    if resource_server is not None:
        try:
            resource_server = ctx.resources.resolve([resource_server]).uri
        except TargetError as exc:
            known = ", ".join(r.uri for r in ctx.resources)
            fail(f"--resource-server: {exc.description}", f"resources of this server: {known}; add the resource to the configuration first")
    try:
        with ctx.unit_of_work() as session:
            client, secret, _ = store_client(
                session, KIND_STATIC, metadata, client_id=client_id,
                with_secret=metadata["token_endpoint_auth_method"] in ("client_secret_basic", "client_secret_post"),
                resource_server_for=resource_server,
            )
    except IntegrityError:
        fail(f"a client with client_id {client_id!r} already exists", "choose another --client-id or remove the old one")
    out.print(f"client_id: [bold]{client.client_id}[/]")
    if secret:
        out.print(f"client_secret: [bold]{secret}[/]  (shown only once)")
    if resource_server:
        out.print(f"May introspect the access tokens issued for {resource_server} and exchange them for upstream tokens.",
                  highlight=False, soft_wrap=True)


@clients_app.command("list")
def clients_list(
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List stored clients (pre-registered and dynamically registered)."""
    from gatehouse.authserver.clients import list_stored_clients

    ctx = open_context(load_settings(data_dir=data_dir))
    with ctx.unit_of_work() as session:
        clients = list_stored_clients(session)
    if as_json:
        print(json.dumps([{"client_id": c.client_id, "kind": c.kind, **_resource_server(c), **c.metadata} for c in clients], indent=2))
        return
    table = Table("client_id", "name", "kind", "auth", "redirect URIs or role")
    table.columns[0].no_wrap = True
    for c in clients:
        role = f"resource server for {c.resource_server_for}" if c.resource_server_for else ""
        table.add_row(c.client_id, c.client_name, c.kind, c.token_endpoint_auth_method, "\n".join(c.redirect_uris) or role)
    out.print(table)


@clients_app.command("show")
def clients_show(client_id: str, data_dir: DataDir = None) -> None:
    """Show one client's registered metadata as JSON."""
    from gatehouse.authserver.clients import load_stored_client

    ctx = open_context(load_settings(data_dir=data_dir))
    with ctx.unit_of_work() as session:
        client = load_stored_client(session, client_id)
    if client is None:
        fail(f"no client with client_id {client_id!r}", "see `gatehouse clients list`")
    out.print_json(json.dumps({"client_id": client.client_id, "kind": client.kind, **_resource_server(client), **client.metadata}))


@clients_app.command("remove")
def clients_remove(client_id: str, data_dir: DataDir = None) -> None:
    """Remove a client and revoke every grant it holds."""
    from sqlalchemy import select

    from gatehouse.authserver.tokens import revoke_grant
    from gatehouse.store.models import Client, Grant

    ctx = open_context(load_settings(data_dir=data_dir))
    with ctx.unit_of_work() as session:
        row = session.get(Client, client_id)
        if row is None:
            fail(f"no client with client_id {client_id!r}", "see `gatehouse clients list`")
        for grant_id in session.scalars(select(Grant.id).where(Grant.client_id == client_id, Grant.revoked_at.is_(None))).all():
            revoke_grant(session, grant_id, "client_removed")
        session.delete(row)
    out.print(f"Removed client {client_id} and revoked its grants.")


@keys_app.command("rotate")
def keys_rotate(
    activation_delay: Annotated[Optional[int], typer.Option(help="Seconds before the new key signs (default: GATEHOUSE_KEY_ACTIVATION_DELAY).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Add a signing key: published now, signing after the delay; old keys retire once their tokens expire."""
    from gatehouse.authserver import keys

    settings = load_settings(data_dir=data_dir)
    ctx = open_context(settings)
    delay = settings.key_activation_delay if activation_delay is None else activation_delay
    if delay < 0:
        fail("--activation-delay must be zero or more seconds")
    with ctx.unit_of_work() as session:
        row = keys.rotate(session, ctx.secret, timedelta(seconds=delay), ctx.max_token_ttl)
    out.print(f"New key [bold]{row.kid}[/] is published now and signs from {row.active_from:%Y-%m-%d %H:%M:%S} UTC.")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List signing keys and their schedule."""
    from sqlalchemy import select

    from gatehouse.store.models import SigningKey

    ctx = open_context(load_settings(data_dir=data_dir))
    with ctx.unit_of_work() as session:
        rows = session.scalars(select(SigningKey).order_by(SigningKey.active_from)).all()
    table = Table("kid", "created", "signs from", "retires after")
    for r in rows:
        table.add_row(r.kid, f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.active_from:%Y-%m-%d %H:%M}", f"{r.retire_after:%Y-%m-%d %H:%M}" if r.retire_after else "-")
    out.print(table)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply database migrations."""
    from sqlalchemy.exc import OperationalError

    from gatehouse.store import db

    settings = load_settings(data_dir=data_dir)
    try:
        engine = db.create_store_engine(settings.effective_database_url)
        db.upgrade(engine)
    except OperationalError as exc:
        fail(f"cannot open the database: {exc.orig}", "check GATEHOUSE_DATABASE_URL / --data-dir")
    out.print("Database is up to date.")


@db_app.command("backup")
def db_backup(
    path: Annotated[Path, typer.Argument(help="File to write (it must not exist yet).", show_default=False)],
    data_dir: DataDir = None,
) -> None:
    """Copy the database to PATH, consistently, while Gatehouse keeps serving (SQLite: online backup; PostgreSQL: pg_dump)."""
    from gatehouse.ops.backup import BackupError, backup

    settings = load_settings(data_dir=data_dir)
    try:
        made = backup(settings.effective_database_url, path.resolve())
    except BackupError as exc:
        fail(str(exc))
    out.print(f"Wrote a {made.kind} backup to [bold]{made.path}[/] ({made.size} bytes).", highlight=False)
    out.print("Its signing keys are encrypted with the instance secret (GATEHOUSE_SECRET_KEY or <data-dir>/secret.key), "
              "which is not in the backup: keep the secret too, apart from it.", highlight=False)
    out.print(f"To restore: {made.restore_hint}", highlight=False)


@db_app.command("check")
def db_check(data_dir: DataDir = None) -> None:
    """Check the database: integrity, schema version, signing keys against the secret, references. Changes nothing."""
    from gatehouse.ops.db_check import check_database

    findings = check_database(load_settings(data_dir=data_dir))
    for finding in findings:
        mark = "[green]ok[/]  " if finding.ok else "[bold red]FAIL[/]"
        out.print(f"{mark} {finding.check}: {finding.detail}", highlight=False)
        if finding.hint:
            out.print(f"     [dim]→ {finding.hint}[/]", highlight=False)
    failed = [f for f in findings if not f.ok]
    if failed:
        err.print(f"[bold red]error:[/] the database failed {len(failed)} check{'s' if len(failed) > 1 else ''}: "
                  f"{', '.join(f.check for f in failed)}", highlight=False)
        raise typer.Exit(1)
    out.print("The database is ready to serve.")


@db_app.command("purge")
def db_purge(
    data_dir: DataDir = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=10_000, help="Rows per delete (default GATEHOUSE_RETENTION_BATCH_SIZE).")] = None,
) -> None:
    """Delete expired codes, tokens, revocations and replay records now (one pass of the retention task)."""
    from sqlalchemy.exc import SQLAlchemyError

    from gatehouse.ops.retention import Purger

    settings = load_settings(data_dir=data_dir)
    engine = open_existing_store(settings)
    try:
        report = Purger(engine, settings).run_pass(batch_size=batch_size)
    except SQLAlchemyError as exc:
        fail(f"the purge failed: {getattr(exc, 'orig', exc)}", "check the database with `gatehouse db check`")
    finally:
        engine.dispose()
    out.print(f"Retention ({settings.retention_grace} s after expiry): {report.summary()}", highlight=False)


def open_existing_store(settings: Settings):
    """An engine on the store, which must exist already and be at the newest schema."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from gatehouse.ops.db_check import schema_revisions
    from gatehouse.store import db

    url = settings.effective_database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        fail(f"there is no database at {parsed.database}", "check --data-dir / GATEHOUSE_DATABASE_URL")
    engine = db.create_store_engine(url)
    try:
        current, head = schema_revisions(engine)
    except OperationalError as exc:
        fail(f"cannot open the database: {exc.orig}", "check GATEHOUSE_DATABASE_URL / --data-dir and that the database server is running")
    if current != head:
        fail(f"the database schema is at revision {current}, not {head}", "run `gatehouse db check`, then `gatehouse db upgrade`")
    return engine


def main() -> None:
    app()


if __name__ == "__main__":
    main()
