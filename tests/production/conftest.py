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

import pytest

from tests.conftest import create_postgres_database, drop_postgres_database
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


__all__ = ["create_postgres_database", "drop_postgres_database"]  # the production tests import them from here


@pytest.fixture
def postgres_url():
    url = create_postgres_database("gh_prod")
    yield url
    drop_postgres_database(url.rsplit("/", 1)[1])
