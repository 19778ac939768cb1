"""Fixtures of the production tests: real ``gatehouse serve`` processes on SQLite and PostgreSQL.

- ``start_gatehouse(database_url, data_dir, secret_key, issuer=None, extra_args=[], env={})``
  starts an instance (:func:`tests.production.harness.start_gatehouse`); every instance a test
  started is stopped after it, by pid, even when the test fails.
- ``secret_key``: a fresh instance secret (64 hex digits), to share between instances.
- ``postgres_url``: a fresh PostgreSQL database, dropped afterwards (for PostgreSQL-only tests;
  ``store_url`` from tests/conftest.py runs a test once per backend).
"""

from __future__ import annotations

import secrets
import uuid

import pytest

from tests.conftest import POSTGRES_ADMIN_URL, _postgres_admin, missing_component
from tests.production.harness import RunningInstance
from tests.production.harness import start_gatehouse as _start


@pytest.fixture
def secret_key() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def start_gatehouse():
    started: list[RunningInstance] = []

    def start(database_url, data_dir, secret_key, issuer=None, extra_args=(), env=None, **options) -> RunningInstance:
        instance = _start(database_url, data_dir, secret_key, issuer, list(extra_args), dict(env or {}), **options)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


def drop_postgres_database(name: str) -> None:
    """End every session on database ``name`` and drop it."""
    with _postgres_admin() as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def create_postgres_database() -> str:
    """A new, empty database; returns its SQLAlchemy URL."""
    name = f"gh_prod_{uuid.uuid4().hex[:12]}"
    try:
        admin = _postgres_admin()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not here"
        missing_component(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


@pytest.fixture
def postgres_url():
    url = create_postgres_database()
    yield url
    drop_postgres_database(url.rsplit("/", 1)[1])
