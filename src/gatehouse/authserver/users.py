"""Local accounts with argon2id password hashes, and password-less accounts created for the users
of a trusted enterprise IdP (their names hold a ``:``, which local usernames cannot)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gatehouse.store.models import User
from gatehouse.timeutil import utcnow

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing of both answers alike.
_DUMMY_HASH = _hasher.hash("gatehouse-timing-equaliser")


class UserError(ValueError):
    """A username or password that cannot be accepted; the message says what to change."""


def create_user(session: Session, username: str, password: str) -> User:
    if not USERNAME.match(username):
        raise UserError(
            f"{username!r} is not a valid username: use 1-128 letters, digits or . _ @ + -, starting with a letter or digit"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"a user named {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password), disabled=False, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled or not user.password_hash:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return user


def active_user_named(session: Session, username: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    return user if user is not None and not user.disabled else None


def provisioned_user(session: Session, username: str, display_name: str | None) -> User | None:
    """The account ``username``, created without a password if it does not exist (safe when two
    requests race); None if it exists but is disabled."""
    connection = session.connection()
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    values = {"username": username, "password_hash": None, "display_name": display_name, "disabled": False, "created_at": utcnow()}
    connection.execute(insert(User.__table__).values(**values).on_conflict_do_nothing(index_elements=["username"]))
    return active_user_named(session, username)


def count_users(session: Session) -> int:
    return len(session.scalars(select(User.id).limit(1)).all())
