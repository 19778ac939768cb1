"""A small notes service: each token subject has its own notes.

Tools that read need ``notes:read``; tools that change notes need ``notes:write``
(which implies ``notes:read``). Handlers learn who calls from the guard, never the token.
"""

from __future__ import annotations

from anyio import to_thread
from mcp.server.mcpserver import Context, MCPServer
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gatehouse.guard import Policy, current_caller
from gatehouse.store import db as store_db
from gatehouse.store.models import Note
from gatehouse.timeutil import utcnow

NOTES_POLICY = Policy(
    tools={
        "list_notes": ["notes:read"],
        "read_note": ["notes:read"],
        "search_notes": ["notes:read"],
        "add_note": ["notes:write"],
        "update_note": ["notes:write"],
        "delete_note": ["notes:write"],
        "*": ["notes:read"],
    },
    implies={"notes:write": ["notes:read"]},
)

MAX_TITLE = 200
MAX_BODY = 20_000


class NoteError(ValueError):
    """A request the notes service refuses; the message says what to change."""


def _owner(ctx: Context) -> str:
    caller = current_caller(ctx)
    if caller is None:
        raise NoteError("this tool needs a signed-in caller")
    return caller.subject


def _as_dict(note: Note) -> dict:
    return {"id": note.id, "title": note.title, "body": note.body, "updated_at": note.updated_at.isoformat(timespec="seconds") + "Z"}


def create_notes_server(sessions: sessionmaker[Session]) -> MCPServer:
    mcp = MCPServer(name="gatehouse-notes", title="Gatehouse notes", version="0.1.0",
                    instructions="Your personal notes. Read them with notes:read; change them with notes:write.")

    def run(work):
        with store_db.transaction(sessions) as session:
            return work(session)

    @mcp.tool()
    async def list_notes(ctx: Context) -> list[dict]:
        """List your notes, newest first (titles and ids)."""
        owner = _owner(ctx)
        notes = await to_thread.run_sync(
            run, lambda s: s.scalars(select(Note).where(Note.owner == owner).order_by(Note.updated_at.desc())).all()
        )
        return [{"id": n.id, "title": n.title} for n in notes]

    @mcp.tool()
    async def read_note(note_id: int, ctx: Context) -> dict:
        """Read one of your notes by id."""
        owner = _owner(ctx)
        note = await to_thread.run_sync(run, lambda s: s.scalar(select(Note).where(Note.id == note_id, Note.owner == owner)))
        if note is None:
            raise NoteError(f"you have no note with id {note_id}")
        return _as_dict(note)

    @mcp.tool()
    async def search_notes(query: str, ctx: Context) -> list[dict]:
        """Find your notes whose title or text contains ``query`` (case-insensitive)."""
        owner = _owner(ctx)
        pattern = f"%{query.strip()}%"
        notes = await to_thread.run_sync(
            run,
            lambda s: s.scalars(
                select(Note).where(Note.owner == owner, or_(Note.title.ilike(pattern), Note.body.ilike(pattern))).limit(50)
            ).all(),
        )
        return [_as_dict(n) for n in notes]

    @mcp.tool()
    async def add_note(title: str, body: str, ctx: Context) -> dict:
        """Write a new note."""
        owner = _owner(ctx)
        _check(title, body)

        def add(s):
            now = utcnow()
            note = Note(owner=owner, title=title.strip(), body=body, created_at=now, updated_at=now)
            s.add(note)
            s.flush()
            return _as_dict(note)

        return await to_thread.run_sync(run, add)

    @mcp.tool()
    async def update_note(note_id: int, title: str, body: str, ctx: Context) -> dict:
        """Replace the title and text of one of your notes."""
        owner = _owner(ctx)
        _check(title, body)

        def update(s):
            note = s.scalar(select(Note).where(Note.id == note_id, Note.owner == owner))
            if note is None:
                raise NoteError(f"you have no note with id {note_id}")
            note.title, note.body, note.updated_at = title.strip(), body, utcnow()
            return _as_dict(note)

        return await to_thread.run_sync(run, update)

    @mcp.tool()
    async def delete_note(note_id: int, ctx: Context) -> str:
        """Delete one of your notes."""
        owner = _owner(ctx)
        deleted = await to_thread.run_sync(
            run, lambda s: s.execute(delete(Note).where(Note.id == note_id, Note.owner == owner)).rowcount
        )
        if not deleted:
            raise NoteError(f"you have no note with id {note_id}")
        return f"deleted note {note_id}"

    return mcp


def _check(title: str, body: str) -> None:
    if not title.strip():
        raise NoteError("a note needs a title")
    if len(title) > MAX_TITLE:
        raise NoteError(f"the title is longer than {MAX_TITLE} characters")
    if len(body) > MAX_BODY:
        raise NoteError(f"the text is longer than {MAX_BODY} characters")
