"""Local users linked to upstream accounts by (upstream issuer, upstream subject) (UP-1).

The link is never made by email: an email address can be reassigned or unverified at the provider,
and two upstream accounts with one email are two people here. A user created on first sign-in is
named ``<provider>:<mapped claim>`` (the ``:`` keeps these names apart from local accounts, which
cannot hold one), made unique with ``-2``, ``-3``, ... and never renamed, since it is the ``sub``
of the user's access tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gatehouse.authserver.upstream.providers import UpstreamUser
from gatehouse.store.models import UpstreamIdentity, User
from gatehouse.timeutil import utcnow

MAX_USERNAME = User.__table__.c.username.type.length
ATTEMPTS = 5


@dataclass(frozen=True)
class SignedInUser:
    user: User
    created: bool


def _free_username(db: Session, wanted: str) -> str:
    base = wanted[: MAX_USERNAME - 8]
    taken = set(db.scalars(select(User.username).where(User.username.startswith(base, autoescape=True))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def sign_in(db: Session, provider: str, who: UpstreamUser) -> SignedInUser:
    """The user linked to ``who``; created, with the link, on the first sign-in (safe when two
    first sign-ins race: the loser finds the winner's link)."""
    for _ in range(ATTEMPTS):
        link = db.scalar(select(UpstreamIdentity).where(UpstreamIdentity.issuer == who.issuer, UpstreamIdentity.subject == who.subject))
        now = utcnow()
        if link is not None:
            link.last_login_at = now
            link.email = who.email
            return SignedInUser(db.get(User, link.user_id), created=False)
        try:
            with db.begin_nested():
                user = User(
                    username=_free_username(db, who.username), password_hash=None, display_name=who.name,
                    disabled=False, created_at=now,
                )
                db.add(user)
                db.flush()
                db.add(
                    UpstreamIdentity(
                        user_id=user.id, provider=provider, issuer=who.issuer, subject=who.subject, email=who.email,
                        created_at=now, last_login_at=now,
                    )
                )
                db.flush()
        except IntegrityError:
            continue
        return SignedInUser(user, created=True)
    raise RuntimeError("could not create a user for this upstream account; try again")


def linked_providers(db: Session, user_id: int) -> list[UpstreamIdentity]:
    return list(db.scalars(select(UpstreamIdentity).where(UpstreamIdentity.user_id == user_id).order_by(UpstreamIdentity.created_at)))


def is_only_sign_in(db: Session, user: User, provider: str) -> bool:
    """True when ``provider`` is the one way ``user`` can sign in (no password, no other link)."""
    if user.password_hash:
        return False
    others = db.scalar(select(UpstreamIdentity.id).where(UpstreamIdentity.user_id == user.id, UpstreamIdentity.provider != provider))
    return others is None


def unlink(db: Session, user_id: int, provider: str) -> int:
    """Remove the user's links to ``provider``; the number removed."""
    result = db.execute(delete(UpstreamIdentity).where(UpstreamIdentity.user_id == user_id, UpstreamIdentity.provider == provider))
    return result.rowcount


def has_local_accounts(db: Session) -> bool:
    """Whether any user can sign in with a password here."""
    return db.scalar(select(User.id).where(User.password_hash.is_not(None)).limit(1)) is not None
