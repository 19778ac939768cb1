"""Health checks of a real ``gatehouse serve`` (issue 7, Operations): /healthz is the process,
/readyz the store and the signing keys."""

from __future__ import annotations

import httpx2

from tests.production.conftest import drop_postgres_database


def test_healthz_and_readyz_on_a_live_instance(tmp_path, store_url, secret_key, start_gatehouse):
    instance = start_gatehouse(store_url, tmp_path / "data", secret_key)

    health = httpx2.get(f"{instance.url}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx2.get(f"{instance.url}/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok"
    assert body["checks"]["store"]["status"] == "ok" and body["checks"]["store"]["duration_ms"] >= 0
    published = [key["kid"] for key in httpx2.get(f"{instance.url}/jwks").json()["keys"]]
    assert body["checks"]["signing_keys"] == {"status": "ok", "kid": published[0]}
    assert ready.headers["cache-control"] == "no-store"


def test_readyz_is_503_naming_the_store_when_the_postgresql_database_is_dropped(tmp_path, postgres_url, secret_key, start_gatehouse):
    instance = start_gatehouse(postgres_url, tmp_path / "data", secret_key)
    assert httpx2.get(f"{instance.url}/readyz").status_code == 200

    drop_postgres_database(postgres_url.rsplit("/", 1)[1])  # its sessions are terminated first

    ready = httpx2.get(f"{instance.url}/readyz", timeout=30)
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["store"]["status"] == "failed"
    assert body["checks"]["store"]["reason"] == "the database is not reachable"
    assert "does not exist" in body["checks"]["store"]["detail"]  # the driver's message: asked from loopback
    assert body["checks"]["signing_keys"]["status"] == "ok"  # loaded keys stay usable
    # liveness does not depend on the store: the orchestrator must not restart a healthy process
    assert httpx2.get(f"{instance.url}/healthz").status_code == 200
    assert instance.process.poll() is None


def test_readyz_keeps_the_driver_message_from_callers_off_loopback(tmp_path):
    """A load balancer on another host learns which check failed, not the database's host or name."""
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from gatehouse.authserver.context import build_context
    from gatehouse.config import Settings
    from gatehouse.ops.health import Readiness

    ctx = build_context(Settings(data_dir=tmp_path / "data"))
    ctx.engine.dispose()
    (tmp_path / "data" / "gatehouse.db").unlink()
    (tmp_path / "data" / "gatehouse.db").mkdir()  # SQLite cannot open a directory: the store is unreachable
    app = Starlette(routes=[Route("/readyz", Readiness(ctx).readyz)])
    for client, detailed in ((("203.0.113.7", 40000), False), (("127.0.0.1", 40000), True)):
        with TestClient(app, client=client) as http:
            body = http.get("/readyz").json()
        assert body["checks"]["store"]["reason"] == "the database is not reachable"
        assert ("detail" in body["checks"]["store"]) is detailed, client
