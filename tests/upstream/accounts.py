"""The people who sign in at the upstream identity providers in the tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamAccount:
    """A user at an upstream OpenID Provider; ``username`` (or ``email``) and ``password`` sign in."""

    username: str
    password: str
    sub: str
    email: str
    name: str
    email_verified: bool = True

    def as_config(self) -> dict:
        return {
            "username": self.username, "password": self.password, "sub": self.sub,
            "email": self.email, "name": self.name, "email_verified": self.email_verified,
        }


DEFAULT_ACCOUNTS = (
    UpstreamAccount("alice", "alice-upstream-pw", "110169484474386276334", "alice@example.com", "Alice Liddell"),
    UpstreamAccount("bob", "bob-upstream-pw", "108497219312765302113", "bob@example.com", "Bob Builder"),
    UpstreamAccount("mallory", "mallory-upstream-pw", "104812937465012398745", "mallory@example.com",
                    "Mallory Unverified", email_verified=False),
)
