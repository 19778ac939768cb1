"""``gatehouse doctor URL [--login] [--json | --markdown]``: the Typer command.

Exit codes: 0 when nothing fails (warnings do not fail a run), 1 when a check fails or the
server cannot be reached, 2 on a usage error. Bad input ends in one line, never a traceback.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated, Optional

import typer
from rich.console import Console


def _usage(err: Console, message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def doctor(
    url: Annotated[str, typer.Argument(help="The MCP server's URL, e.g. https://mcp.example.com/mcp.", show_default=False)],
    login: Annotated[bool, typer.Option("--login", help="Also sign in (a throwaway registration) and check the tokens, "
                                        "refresh, revocation and the server's audience validation.")] = False,
    headless: Annotated[bool, typer.Option("--headless", help="With --login: sign in without a browser, for authorization "
                                           "servers that approve without a person.")] = False,
    other_resource: Annotated[Optional[str], typer.Option(
        "--other-resource", help="With --login: a resource URL the same AS issues tokens for, to get a token for another "
                                 "audience (default: a made-up URL on this server's origin).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (schema gatehouse.doctor/1).")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the report as Markdown, to paste into an issue.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 5.0,
    login_timeout: Annotated[float, typer.Option(help="Seconds to wait for each sign-in with --login.")] = 300.0,
) -> None:
    """Diagnose an MCP server's OAuth setup from outside: challenge, metadata, AS, registration, CORS; --login signs in too."""
    from gatehouse.doctor import render  # imported here: mounting the command costs the CLI nothing
    from gatehouse.doctor.options import DoctorOptions
    from gatehouse.doctor.runner import BadTarget, Unreachable, check_target, diagnose
    from gatehouse.doctor.urls import canonical

    out, err = Console(), Console(stderr=True, soft_wrap=True)
    if as_json and markdown:
        _usage(err, "choose one of --json and --markdown")
    if (headless or other_resource) and not login:
        _usage(err, "--headless and --other-resource go with --login")
    if timeout <= 0 or login_timeout <= 0:
        _usage(err, "--timeout and --login-timeout must be more than 0 seconds")
    try:
        check_target(url)
        if other_resource is not None:
            check_target(other_resource)
            if canonical(other_resource) == canonical(url):
                _usage(err, "--other-resource must name another resource than the server being checked")
    except BadTarget as exc:
        _usage(err, str(exc))
    options = DoctorOptions(login=login, headless=headless, other_resource=other_resource, timeout=timeout,
                            login_timeout=login_timeout)
    try:
        if login and not (as_json or markdown):
            with err.status("Checking…") as spinner:
                options = replace(options, status=lambda line: spinner.update(line))
                report = asyncio.run(diagnose(url, options))
        else:
            report = asyncio.run(diagnose(url, options))
    except Unreachable as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    if as_json:
        print(render.to_json(report))
    elif markdown:
        print(render.to_markdown(report))
    else:
        render.to_console(report, out)
    raise typer.Exit(report.exit_code)
