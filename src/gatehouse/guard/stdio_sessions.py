"""The stdio gateway's MCP sessions: one child process each, started, read, reaped and stopped here.

A child speaks the MCP stdio transport (one JSON-RPC message per line on stdin and stdout;
stderr is its log, which is read line by line into this module's logger so that a chatty
child never blocks on a full pipe). Each message the child writes is handed to its session,
which puts it on one of its HTTP streams (:mod:`gatehouse.guard.stdio_streams`).

Sessions end on ``DELETE``, when the child exits, or after ``idle_timeout`` seconds with no
request in flight (its POST connected or not: Streamable HTTP, "Resumability and Redelivery")
and no HTTP request or GET stream open (one reaper task for all sessions). An ended session's
id is forgotten, so the client gets 404 and must start a new session (Streamable HTTP, "Session
Management"). A child is stopped as the MCP lifecycle asks of a stdio client ("Shutdown"):
close its stdin, then SIGTERM, then SIGKILL, each after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets

from gatehouse.guard.stdio_streams import ChildSession

log = logging.getLogger("gatehouse.gateway.stdio")

MAX_LINE = 16 * 1024 * 1024
STDERR_LINE = 4096
STOP_GRACE = 2.0


class SessionsFull(Exception):
    """Every session slot is taken."""


class CommandFailed(Exception):
    """The MCP server command cannot be started."""


class SessionRegistry:
    """The live sessions of one stdio command, at most ``max_sessions`` of them."""

    def __init__(self, command: list[str], *, max_sessions: int, idle_timeout: float | None, env: dict | None):
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("the idle timeout must be a positive number of seconds")
        self.command = command
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.env = env
        self.sessions: dict[str, ChildSession] = {}
        self._starting = 0
        self._reaper: asyncio.Task | None = None

    def get(self, session_id: str | None, owner: tuple[str, str] | None) -> ChildSession | None:
        """The live session ``session_id``, if ``owner`` started it (a session is bound to its caller)."""
        session = self.sessions.get(session_id) if session_id else None
        if session is None or session.closed or session.owner != owner:
            return None
        return session

    async def start(self, owner: tuple[str, str] | None) -> ChildSession:
        if len(self.sessions) + self._starting >= self.max_sessions:
            raise SessionsFull
        self._starting += 1  # a slot is taken from now on, so concurrent starts cannot pass the limit
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env, limit=MAX_LINE,
            )
        except OSError as exc:
            log.error("cannot start the MCP server %r: %s", self.command[0], exc)
            raise CommandFailed from exc
        finally:
            self._starting -= 1
        session = ChildSession(secrets.token_hex(16), process, owner, last_active=asyncio.get_running_loop().time())
        session.tasks = [asyncio.create_task(self._read(session)), asyncio.create_task(_log_stderr(session))]
        self.sessions[session.id] = session
        if self.idle_timeout is not None and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.create_task(self._reap(self.idle_timeout))
        return session

    async def end(self, session: ChildSession, reason: str) -> None:
        """Forget ``session`` and stop its child."""
        self.sessions.pop(session.id, None)
        session.closed = True
        session.fail_waiting(reason)
        process = session.process
        for stop in (process.stdin.close, process.terminate, process.kill):
            if process.returncode is not None:
                break
            with contextlib.suppress(OSError):  # ProcessLookupError included: it has just exited
                stop()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_GRACE)
        _, pending = await asyncio.wait(session.tasks, timeout=STOP_GRACE)
        for task in pending:
            task.cancel()

    async def _read(self, session: ChildSession) -> None:
        stdout = session.process.stdout
        while True:
            try:
                line = await stdout.readline()
            except ValueError:
                log.warning("session %s: a message longer than %d bytes was dropped", session.id[:8], MAX_LINE)
                continue
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                log.debug("session %s: the child wrote a line that is not JSON", session.id[:8])
                continue
            if isinstance(message, dict):
                session.route(message)
        code = await session.process.wait()
        if not session.closed:
            session.closed = True
            self.sessions.pop(session.id, None)
            log.warning("the MCP server of session %s exited with status %s", session.id[:8], code)
            session.fail_waiting(f"the MCP server process exited (status {code}); start a new session")

    async def _reap(self, idle_timeout: float) -> None:
        """End every session that has been idle for ``idle_timeout`` seconds; one task for all sessions.

        A request in flight is not idleness, even when its client went away: it may come back for
        the answer with ``Last-Event-ID``, and has ``idle_timeout`` seconds from the answer to do so.
        """
        loop = asyncio.get_running_loop()
        while self.sessions:
            await asyncio.sleep(min(idle_timeout / 4, 30.0))
            now = loop.time()
            idle = [s for s in self.sessions.values()
                    if not s.busy and not s.waiting and now - s.last_active >= idle_timeout]
            for session in idle:
                log.info("session %s was idle for %.0f s: ending it", session.id[:8], now - session.last_active)
            await asyncio.gather(*(self.end(s, "the session was idle for too long") for s in idle))

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self.end(s, "the gateway is shutting down") for s in list(self.sessions.values())))


async def _log_stderr(session: ChildSession) -> None:
    """Read the child's stderr as it comes, one log record a line, so the child never blocks on it."""
    pid = session.process.pid
    while True:
        try:
            line = await session.process.stderr.readline()
        except ValueError:
            continue
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip()
        log.info("MCP server %s (session %s): %s", pid, session.id[:8], text[:STDERR_LINE])
