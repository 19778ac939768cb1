"""``gatehouse db check``: is this store one Gatehouse can serve from, intact and complete?

Read-only checks, in order (a failed connection stops the rest):

- the database opens (SQLite: the file exists and is an SQLite database);
- SQLite: ``PRAGMA integrity_check`` and ``PRAGMA foreign_key_check``;
- the schema is at this Gatehouse's newest alembic revision;
- every signing key decrypts with the instance secret, and one may sign now;
- references hold: no token, code, grant or consent points at a grant or user that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, exists, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gatehouse.authserver.keys import KeyRing, KeyUnwrapError
from gatehouse.config import Settings
from gatehouse.instance_secrets import SECRET_FILE_NAME, SecretKeyError, decode_secret_key
from gatehouse.store.db import alembic_config
from gatehouse.store.models import Base

SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    hint: str | None = None


class _Stop(Exception):
    """A finding after which the other checks cannot run."""

    def __init__(self, finding: Finding):
        self.finding = finding


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def _open(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file():
            raise _Stop(Finding("database", False, f"there is no SQLite database at {path}",
                                "check --data-dir / GATEHOUSE_DATABASE_URL"))
        with path.open("rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise _Stop(Finding("database", False, f"{path} is not an SQLite database (its header is wrong)",
                                    "restore the database from a backup (`gatehouse db backup` makes them)"))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _Stop(Finding("database", False, f"cannot open the database: {_reason(exc)}",
                            "check GATEHOUSE_DATABASE_URL / --data-dir and that the database server is running")) from None
    return engine


def _sqlite_integrity(engine: Engine) -> list[Finding]:
    restore = "restore the database from a backup (`gatehouse db backup` makes them); see README, Running in production"
    try:
        with engine.connect() as connection:
            problems = [row[0] for row in connection.exec_driver_sql("PRAGMA integrity_check")]
            dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    except SQLAlchemyError as exc:
        raise _Stop(Finding("integrity", False, f"SQLite cannot read the database: {_reason(exc)}", restore)) from None
    if problems != ["ok"]:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return [Finding("integrity", False, f"PRAGMA integrity_check found damage: {shown}", restore)]
    findings = [Finding("integrity", True, "PRAGMA integrity_check: ok")]
    if dangling:
        tables = sorted({row[0] for row in dangling})
        findings.append(Finding("foreign keys", False, f"{len(dangling)} rows point at rows that are gone (in {', '.join(tables)})",
                                "restore from a backup, or delete those rows"))
    return findings


def _scripts(engine: Engine) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))


def schema_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """The database's alembic revision (None if it has none) and this Gatehouse's newest."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, _scripts(engine).get_current_head()


def _schema(engine: Engine) -> Finding:
    script = _scripts(engine)
    head = script.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        tables = sorted(inspect(connection).get_table_names())
    if current is None:
        found = f"it holds the tables {', '.join(tables[:8])}" if tables else "it is empty"
        raise _Stop(Finding("schema", False, f"this is not a Gatehouse database: it has no migration record, and {found}",
                            "check GATEHOUSE_DATABASE_URL / --data-dir; a new database is set up by `gatehouse db upgrade`"))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise _Stop(Finding("schema", False, f"the schema is at revision {current}, which this Gatehouse does not know",
                            "it was made by a newer Gatehouse: upgrade Gatehouse, or restore a backup made by this version"))
    if current != head:
        raise _Stop(Finding("schema", False, f"the schema is at revision {current}; this Gatehouse's newest is {head}",
                            "run `gatehouse db upgrade` (with the same --data-dir / GATEHOUSE_DATABASE_URL)"))
    missing = sorted(set(Base.metadata.tables) - set(tables))
    if missing:
        raise _Stop(Finding("schema", False, f"revision {current} is recorded, but tables are missing: {', '.join(missing)}",
                            "the database was changed by hand; restore it from a backup"))
    return Finding("schema", True, f"at revision {current} (the newest)")


def _secret(settings: Settings) -> bytes:
    if settings.secret_key:
        return decode_secret_key(settings.secret_key)
    path = settings.data_dir / SECRET_FILE_NAME
    if not path.is_file():
        raise SecretKeyError(f"no instance secret: GATEHOUSE_SECRET_KEY is not set and there is no {path}")
    return decode_secret_key(path.read_text())


def _signing_keys(engine: Engine, settings: Settings) -> Finding:
    hint = "use the GATEHOUSE_SECRET_KEY (or <data-dir>/secret.key) this database was made with"
    try:
        secret = _secret(settings)
    except SecretKeyError as exc:
        return Finding("signing keys", False, str(exc), hint)
    keyring = KeyRing(sessionmaker(engine), secret)
    try:
        keyring.reload()
    except KeyUnwrapError as exc:
        return Finding("signing keys", False, str(exc), hint)
    kid = keyring.loaded_signing_kid()
    if kid is None:
        return Finding("signing keys", False, "no signing key may sign now",
                       "start `gatehouse serve` once (it creates one), or `gatehouse keys rotate --activation-delay 0`")
    count = len(keyring.published_keys())
    return Finding("signing keys", True, f"{count} published, all decrypt with the instance secret; {kid} signs")


def _orphans() -> list[tuple[str, object]]:
    tables = Base.metadata.tables
    users, grants = tables["users"], tables["grants"]

    def without(child, column, parent_key):
        return select(func.count()).select_from(child).where(
            column.is_not(None), ~exists().where(parent_key == column)
        )

    checks = [
        ("refresh tokens whose grant is gone", without(tables["refresh_tokens"], tables["refresh_tokens"].c.grant_id, grants.c.id)),
        ("access-token records whose grant is gone", without(tables["access_tokens"], tables["access_tokens"].c.grant_id, grants.c.id)),
        ("grants whose user is gone", without(grants, grants.c.user_id, users.c.id)),
        ("authorization codes whose user is gone",
         without(tables["authorization_codes"], tables["authorization_codes"].c.user_id, users.c.id)),
        ("consents whose user is gone", without(tables["consents"], tables["consents"].c.user_id, users.c.id)),
    ]
    if "upstream_identities" in tables:
        identities = tables["upstream_identities"]
        checks.append(("upstream identities whose user is gone", without(identities, identities.c.user_id, users.c.id)))
    return checks


def _references(engine: Engine) -> Finding:
    with engine.connect() as connection:
        found = [(what, connection.execute(query).scalar_one()) for what, query in _orphans()]
    broken = [f"{count} {what}" for what, count in found if count]
    if broken:
        return Finding("references", False, "; ".join(broken), "restore from a backup, or delete those rows")
    return Finding("references", True, "every token, code, grant and consent points at rows that exist")


def check_database(settings: Settings) -> list[Finding]:
    """Every finding, good and bad; the checks never write."""
    url = settings.effective_database_url
    findings: list[Finding] = []
    engine = None
    try:
        engine = _open(url)
        findings.append(Finding("database", True, f"opened {make_url(url).render_as_string(hide_password=True)}"))
        if engine.dialect.name == "sqlite":
            findings += _sqlite_integrity(engine)
        findings.append(_schema(engine))
        findings.append(_signing_keys(engine, settings))
        findings.append(_references(engine))
    except _Stop as stop:
        findings.append(stop.finding)
    except SQLAlchemyError as exc:
        findings.append(Finding("database", False, f"reading the database failed: {_reason(exc)}",
                                "restore the database from a backup (`gatehouse db backup` makes them)"))
    finally:
        if engine is not None:
            engine.dispose()
    return findings
