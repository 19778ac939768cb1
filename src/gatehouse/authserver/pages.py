"""HTML pages: Jinja2 rendering with the security headers every page carries (S-A6)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}

_environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def render(template: str, status_code: int = 200, **context) -> HTMLResponse:
    context.setdefault("base_path", "")
    context.setdefault("signed_in_as", None)
    html = _environment.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def error_page(
    title: str,
    message: str,
    *,
    status_code: int = 400,
    advice: str | None = None,
    error_code: str | None = None,
    return_url: str | None = None,
    return_host: str | None = None,
    base_path: str = "",
) -> HTMLResponse:
    return render(
        "error.html",
        status_code=status_code,
        title=title,
        message=message,
        advice=advice,
        error_code=error_code,
        return_url=return_url,
        return_host=return_host,
        base_path=base_path,
    )
