"""``gatehouse tokens list|show|remove`` and ``gatehouse logout URL``: the stored credentials, by hand.

Nothing here ever prints a token or a client secret, only whether one is stored and until when.
Exit codes: 0 ok, 1 failure (one or two plain lines on stderr), 2 usage. The store (and with it
the MCP SDK) is imported only when a command runs, so registering these commands costs nothing.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from gatehouse.client.errors import ClientError

if TYPE_CHECKING:
    from gatehouse.client.storage import CredentialStore, EntrySummary, StoredEntry

tokens_app = typer.Typer(no_args_is_help=True, help="Stored client credentials and tokens (never printed).")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

StorageDir = Annotated[Optional[Path], typer.Option(
    "--storage-dir", help="Credential store (default: the user's data dir; env GATEHOUSE_CREDENTIALS_DIR).",
    show_default=False,
)]
Issuer = Annotated[Optional[str], typer.Option("--issuer", help="Only the entry of this authorization server.")]


def fail(message: str, hint: str | None = None) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"[dim]→ {hint}[/]")
    raise typer.Exit(1)


def _server_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="URL")
    return url


def _store(storage_dir: Path | None) -> CredentialStore:
    from gatehouse.client.options import ClientOptions
    from gatehouse.client.storage import default_store

    return default_store(ClientOptions(storage_dir=storage_dir))


def _canonical(url: str) -> str:
    from gatehouse.client.storage import canonical_resource

    return canonical_resource(url)


def when(epoch: float | None, now: float | None = None) -> str:
    """``in 59 min`` / ``expired 2 h ago`` / ``no expiry``."""
    if epoch is None:
        return "no expiry"
    delta = epoch - (time.time() if now is None else now)
    amount = abs(delta)
    if amount < 90:
        span = f"{int(amount)} s"
    elif amount < 90 * 60:
        span = f"{round(amount / 60)} min"
    elif amount < 48 * 3600:
        span = f"{round(amount / 3600)} h"
    else:
        span = f"{round(amount / 86400)} days"
    return f"in {span}" if delta >= 0 else f"expired {span} ago"


def _timestamp(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds") if epoch else None


@tokens_app.command("list")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    storage_dir: StorageDir = None,
) -> None:
    """List what is stored, per MCP server and authorization server."""
    summaries = _store(storage_dir).entries()
    if as_json:
        print(json.dumps([summary.to_json() for summary in summaries], indent=2))
        return
    if not summaries:
        out.print("No stored credentials.")
        return
    table = Table("server", "authorization server", "client_id", "scopes", "access token", "refresh")
    for summary in summaries:
        table.add_row(*_row(summary))
    out.print(table)
    for summary in summaries:
        if summary.problem:
            err.print(f"[yellow]warning:[/] {summary.problem}")


def _row(summary: EntrySummary) -> tuple[str, ...]:
    if summary.problem:
        return (f"unreadable: {summary.path}", "", "", "", "", "")
    access = when(summary.expires_at) if summary.has_access_token else "none"
    return (
        summary.resource or "", summary.issuer or "", summary.client_id or "", " ".join(summary.scopes),
        access, "yes" if summary.has_refresh_token else "no",
    )


def _details(entry: StoredEntry) -> dict:
    summary, client = entry.summary(), entry.client
    secret = None
    if client is not None and client.client_secret:
        secret = "stored, " + ("never expires" if not client.client_secret_expires_at else when(client.client_secret_expires_at))
    return {
        "resource": entry.resource,
        "issuer": entry.issuer,
        "client_id": summary.client_id,
        "client_secret": secret,
        "registered_redirect_uris": [str(uri) for uri in (client.redirect_uris or [])] if client else [],
        "scopes": list(summary.scopes),
        "access_token": when(summary.expires_at) if summary.has_access_token else None,
        "access_token_expires_at": _timestamp(summary.expires_at),
        "refresh_token": "stored" if summary.has_refresh_token else None,
        "updated_at": _timestamp(entry.updated_at),
        "path": str(entry.path),
    }


@tokens_app.command("show")
def show_tokens(
    url: Annotated[str, typer.Argument(help="The MCP server URL.", callback=_server_url)],
    issuer: Issuer = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    storage_dir: StorageDir = None,
) -> None:
    """Show what is stored for one MCP server (every authorization server, or --issuer)."""
    try:
        entries = _store(storage_dir).find(url, issuer)
    except ClientError as exc:
        fail(str(exc))
    if not entries:
        fail(f"nothing is stored for {_canonical(url)}" + (f" at {issuer}" if issuer else ""),
             "see `gatehouse tokens list`")
    details = [_details(entry) for entry in entries]
    if as_json:
        print(json.dumps(details, indent=2))
        return
    for index, detail in enumerate(details):
        if index:
            out.print()
        for key, value in detail.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            out.print(f"[bold]{key.replace('_', ' ')}:[/] {shown if shown not in (None, '') else 'none'}")


@tokens_app.command("remove")
def remove_tokens(
    url: Annotated[str, typer.Argument(help="The MCP server URL.", callback=_server_url)],
    issuer: Issuer = None,
    storage_dir: StorageDir = None,
) -> None:
    """Forget what is stored for one MCP server (one authorization server with --issuer)."""
    try:
        removed = _store(storage_dir).remove(url, issuer)
    except ClientError as exc:
        fail(str(exc))
    if not removed:
        fail(f"nothing is stored for {_canonical(url)}" + (f" at {issuer}" if issuer else ""),
             "see `gatehouse tokens list`")
    out.print(f"Removed {removed} stored {'entry' if removed == 1 else 'entries'} for {_canonical(url)}.")


def logout(
    url: Annotated[str, typer.Argument(help="The MCP server URL.", callback=_server_url)],
    storage_dir: StorageDir = None,
    revoke: Annotated[bool, typer.Option("--revoke/--no-revoke", help="Revoke the tokens at the authorization server first (RFC 7009).")] = True,
) -> None:
    """Revoke and forget every stored token and registration for an MCP server (unreadable files are kept as *.corrupt)."""
    store = _store(storage_dir)
    if revoke:
        _revoke_at_servers(store, url)
    try:
        removed = store.remove(url)
    except ClientError as exc:
        fail(str(exc))
    resource = _canonical(url)
    if removed:
        out.print(f"Logged out of {resource} ({removed} stored {'entry' if removed == 1 else 'entries'} removed).")
    else:
        out.print(f"Nothing was stored for {resource}.")


def _revoke_at_servers(store: CredentialStore, url: str) -> None:
    """Best effort: a server that cannot be reached does not stop the local logout."""
    from gatehouse.client.revocation import revoke

    try:
        entries = store.find(url)
    except ClientError:
        err.print("Some stored credentials are unreadable; they cannot be revoked, only set aside.")
        return
    for entry in entries:
        problem = revoke(entry)
        if problem is None and entry.tokens is not None:
            out.print(f"Revoked the tokens at {entry.issuer}.")
        elif problem is not None:
            err.print(f"Could not revoke the tokens at {entry.issuer}: {problem}; they are forgotten here anyway.")
