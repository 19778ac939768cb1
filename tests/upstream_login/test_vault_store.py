"""The vault and the upstream leg's state, on real SQLite and PostgreSQL stores (UP-1, UP-3, S-U2).

No provider is needed here: the vault is filled and read directly, as the callback and the
token-exchange endpoint do. Refresh against a real provider is in test_vault_refresh.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from gatehouse import timeutil
from gatehouse.authserver.context import build_context
from gatehouse.authserver.upstream import identities
from gatehouse.authserver.upstream.providers import UpstreamUser
from gatehouse.authserver.upstream.state import StateRejected, consume_leg, new_leg, save_leg
from gatehouse.authserver.upstream.vault import UpstreamVault
from gatehouse.store.models import UpstreamLoginState, UpstreamToken, User
from gatehouse.upstream_errors import UpstreamNotLinked, UpstreamReauthorizationRequired
from tests.conftest import make_settings

ACCESS = "ya29.access-token-value-that-must-never-be-stored-in-clear"
REFRESH = "1//refresh-token-value-that-must-never-be-stored-in-clear"
UPSTREAMS = [
    {"name": "google", "kind": "oidc", "issuer": "http://127.0.0.1:9/op", "client_id": "c", "client_secret": "s"},
    {"name": "github", "kind": "github", "client_id": "c", "client_secret": "s", "authorize_url": "http://127.0.0.1:9/a",
     "token_url": "http://127.0.0.1:9/t", "api_base": "http://127.0.0.1:9/api"},
]


@pytest.fixture
def ctx(tmp_path, store_url):
    context = build_context(make_settings(tmp_path, store_url, 8000, upstream=UPSTREAMS))
    yield context
    context.engine.dispose()
    timeutil.reset()


def person(subject: str = "110169484474386276334", email: str = "alice@example.com") -> UpstreamUser:
    return UpstreamUser(issuer="http://127.0.0.1:9/op", subject=subject, username=f"google:{email}", email=email, name="Alice")


def signed_in(ctx, who: UpstreamUser | None = None, provider: str = "google") -> int:
    with ctx.unit_of_work() as db:
        return identities.sign_in(db, provider, who or person()).user.id


def store(ctx, user_id: int, token: dict, provider: str = "google") -> None:
    with ctx.unit_of_work() as db:
        ctx.upstream_vault.store(db, user_id=user_id, provider=provider, token=token)


def raw_rows(ctx) -> str:
    with ctx.engine.connect() as connection:
        return repr(connection.execute(text("SELECT * FROM upstream_tokens")).all())


async def test_UP_3_tokens_are_stored_encrypted_and_come_back(ctx):
    user_id = signed_in(ctx)
    store(ctx, user_id, {"access_token": ACCESS, "refresh_token": REFRESH, "token_type": "Bearer", "expires_in": 3600,
                         "scope": "openid email calendar.read", "id_token": "eyJhbGciOi.id.token"})
    rows = raw_rows(ctx)
    assert "openid email calendar.read" in rows, "the scope is kept in clear, for the pages"
    for secret in (ACCESS, REFRESH, ACCESS[:24], REFRESH[-24:], "eyJhbGciOi.id.token"):
        assert secret not in rows
    token = await ctx.upstream_vault.fresh_access_token(user_id, "google")
    assert token.access_token == ACCESS and token.scope == "openid email calendar.read" and token.token_type == "Bearer"
    assert timedelta(minutes=59) < token.expires_at - timeutil.utcnow() <= timedelta(hours=1)
    assert ACCESS not in repr(token)


async def test_UP_3_a_new_sign_in_without_refresh_token_keeps_the_old_one(ctx):
    user_id = signed_in(ctx)
    store(ctx, user_id, {"access_token": "first", "refresh_token": REFRESH, "expires_in": 60})
    store(ctx, user_id, {"access_token": "second", "expires_in": 3600})
    with ctx.sessions() as db:
        row = db.scalar(select(UpstreamToken))
        assert ctx.upstream_vault._open(row)["refresh_token"] == REFRESH
    assert (await ctx.upstream_vault.fresh_access_token(user_id, "google")).access_token == "second"


async def test_UP_3_a_response_without_scope_granted_the_configured_scopes(ctx):
    """RFC 6749 section 5.1: ``scope`` is omitted when it is what was asked."""
    user_id = signed_in(ctx)
    store(ctx, user_id, {"access_token": ACCESS, "expires_in": 3600})
    assert (await ctx.upstream_vault.fresh_access_token(user_id, "google")).scope == "openid email profile"


async def test_UP_3_typed_errors_when_nothing_usable_is_held(ctx):
    user_id = signed_in(ctx)
    with pytest.raises(UpstreamReauthorizationRequired, match="holds no google token"):
        await ctx.upstream_vault.fresh_access_token(user_id, "google")  # linked, but nothing stored
    with pytest.raises(UpstreamNotLinked, match="has not signed in through github"):
        await ctx.upstream_vault.fresh_access_token(user_id, "github")
    with pytest.raises(UpstreamNotLinked, match="no upstream provider named 'entra'"):
        await ctx.upstream_vault.fresh_access_token(user_id, "entra")
    store(ctx, user_id, {"access_token": ACCESS, "expires_in": 30})  # expires within the margin, no refresh token
    with pytest.raises(UpstreamReauthorizationRequired, match="gave no refresh token"):
        await ctx.upstream_vault.fresh_access_token(user_id, "google")


async def test_UP_3_a_ciphertext_only_opens_in_its_own_row_with_this_secret(ctx, tmp_path):
    alice = signed_in(ctx)
    bob = signed_in(ctx, person("108497219312765302113", "bob@example.com"))
    store(ctx, alice, {"access_token": "alice-token", "expires_in": 3600})
    store(ctx, bob, {"access_token": "bob-token", "expires_in": 3600})
    with ctx.unit_of_work() as db:
        rows = {row.user_id: row for row in db.scalars(select(UpstreamToken))}
        rows[bob].tokens_encrypted = rows[alice].tokens_encrypted  # a copied ciphertext
    with pytest.raises(UpstreamReauthorizationRequired, match="cannot be decrypted"):
        await ctx.upstream_vault.fresh_access_token(bob, "google")
    other = UpstreamVault(ctx.sessions, ctx.upstream, b"\x01" * 32)
    with pytest.raises(UpstreamReauthorizationRequired, match="cannot be decrypted"):
        await other.fresh_access_token(alice, "google")


async def test_UP_3_revoke_deletes_one_provider_or_all(ctx):
    user_id = signed_in(ctx)
    store(ctx, user_id, {"access_token": "g", "expires_in": 3600})
    store(ctx, user_id, {"access_token": "gh"}, provider="github")
    with ctx.unit_of_work() as db:
        assert ctx.upstream_vault.held_providers(db, user_id) == {"google", "github"}
        ctx.upstream_vault.revoke(db, user_id=user_id, provider="github")
    with ctx.unit_of_work() as db:
        assert ctx.upstream_vault.held_providers(db, user_id) == {"google"}
        ctx.upstream_vault.revoke(db, user_id=user_id)
        assert ctx.upstream_vault.held_providers(db, user_id) == set()
    with pytest.raises(UpstreamReauthorizationRequired):
        await ctx.upstream_vault.fresh_access_token(user_id, "google")


def test_UP_1_users_are_linked_by_issuer_and_subject_never_by_email(ctx):
    first = signed_in(ctx, person("sub-1", "same@example.com"))
    again = signed_in(ctx, person("sub-1", "renamed@example.com"))
    other = signed_in(ctx, person("sub-2", "same@example.com"))
    assert first == again and other != first
    with ctx.sessions() as db:
        assert db.get(User, first).username == "google:same@example.com"
        assert db.get(User, other).username == "google:same@example.com-2", "the same email makes another user"
        assert [link.email for link in identities.linked_providers(db, first)] == ["renamed@example.com"]


def test_S_U2_state_is_single_use_bound_to_browser_and_provider_and_expires(ctx):
    def started(browser: str = "browser-1"):
        leg = new_leg("google", "/authorize?client_id=c", "c", True)
        with ctx.unit_of_work() as db:
            save_leg(db, leg, browser)
        return leg

    def reason(state, browser="browser-1", provider="google") -> str:
        with pytest.raises(StateRejected) as caught, ctx.unit_of_work() as db:
            consume_leg(db, state=state, provider=provider, browser_id=browser)
        return caught.value.reason

    leg = started()
    with ctx.sessions() as db:
        stored = repr([(r.state_hash, r.browser_hash) for r in db.scalars(select(UpstreamLoginState))])
    assert leg.state not in stored and "browser-1" not in stored
    assert reason(None) == "missing"
    assert reason("not-a-state") == "unknown"
    assert reason(leg.state, provider="github") == "mismatched"
    assert reason(leg.state, browser="browser-2") == "other_browser"
    with ctx.unit_of_work() as db:
        got = consume_leg(db, state=leg.state, provider="google", browser_id="browser-1")
    assert (got.code_verifier, got.nonce, got.client_id, got.consented) == (leg.code_verifier, leg.nonce, "c", True)
    with ctx.sessions() as db:
        assert all(row.code_verifier == "" for row in db.scalars(select(UpstreamLoginState)))
    assert reason(leg.state) == "reused"
    late = started()
    timeutil.travel(timedelta(minutes=10, seconds=1))
    assert reason(late.state) == "expired"
