"""Fixtures for the official MCP conformance suite: Node 22 and the harness, and a SQLite-backed AS.

The store backends are covered by the rest of the suite; here one backend (SQLite) keeps the
conformance runs within their time budget.
"""

from __future__ import annotations

import pytest

from tests.conformance.harness import check_harness, find_node


@pytest.fixture(scope="session")
def node() -> str:
    """The Node 22 binary that runs the harness (the harness is checked to be installed too)."""
    path = find_node()
    check_harness()
    return path


@pytest.fixture
def store_url(tmp_path):
    yield f"sqlite:///{tmp_path / 'gatehouse.db'}"
