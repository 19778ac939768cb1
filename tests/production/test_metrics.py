"""Prometheus metrics of a real ``gatehouse serve`` (issue 7, Operations): counters move with
what happens, series are bounded, and /metrics is never public by accident."""

from __future__ import annotations

import os

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from tests.production.flows import (
    add_user,
    client_credentials_token,
    failed_login,
    refresh,
    register_machine_client,
    register_public_client,
    user_tokens,
)
from tests.production.harness import free_port

METRICS_TOKEN = "metrics-token-for-tests-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str, **kwargs) -> dict:
    response = httpx2.get(url, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_counters_move_with_tokens_refreshes_reuse_and_failed_logins(tmp_path, store_url, secret_key, start_gatehouse):
    admin_port = free_port()
    instance = start_gatehouse(store_url, tmp_path / "data", secret_key, extra_args=["--admin-port", str(admin_port)])
    add_user(store_url, tmp_path / "data", "mallory", "a long enough password")
    metrics_url = f"http://127.0.0.1:{admin_port}/metrics"
    before = scrape(metrics_url)

    machine = register_machine_client(instance.url)
    assert client_credentials_token(instance.url, machine).status_code == 200
    public = register_public_client(instance.url)
    tokens, _ = user_tokens(instance.url, public, "mallory", "a long enough password")
    assert refresh(instance.url, public, tokens["refresh_token"]).status_code == 200
    reuse = refresh(instance.url, public, tokens["refresh_token"])
    assert reuse.status_code == 400 and "reuse" in reuse.json()["error_description"]
    assert failed_login(instance.url, "mallory").status_code == 401
    wrong_secret = client_credentials_token(instance.url, (machine[0], "not-the-secret"))
    assert wrong_secret.status_code == 401

    after = scrape(metrics_url)
    moved = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert moved("gatehouse_tokens_issued_total", grant_type="client_credentials") == 1
    assert moved("gatehouse_tokens_issued_total", grant_type="authorization_code") == 1
    assert moved("gatehouse_tokens_issued_total", grant_type="refresh_token") == 1
    assert moved("gatehouse_token_refreshes_total") == 1
    assert moved("gatehouse_refresh_token_reuse_detected_total") == 1
    assert moved("gatehouse_failed_logins_total") == 1
    assert moved("gatehouse_failed_client_authentications_total") == 1
    assert moved("gatehouse_audit_events_total", event="grant.revoked") == 1  # by the reuse
    assert moved("gatehouse_audit_events_total", event="login.failed") == 1
    # POST /token: client credentials, code, refresh = 200; the reuse = 400; the wrong secret = 401
    assert moved("gatehouse_http_requests_total", method="POST", route="/token", status="200") == 3
    assert moved("gatehouse_http_requests_total", method="POST", route="/token", status="400") == 1
    assert moved("gatehouse_http_requests_total", method="POST", route="/token", status="401") == 1
    assert moved("gatehouse_http_request_duration_seconds_count", method="POST", route="/token") == 5

    # the public port has no /metrics without GATEHOUSE_METRICS_TOKEN
    assert httpx2.get(f"{instance.url}/metrics").status_code == 404


def test_series_are_by_route_template_not_raw_path(tmp_path, secret_key, start_gatehouse):
    admin_port = free_port()
    instance = start_gatehouse(None, tmp_path / "data", secret_key, extra_args=["--admin-port", str(admin_port)])
    registered = httpx2.post(f"{instance.url}/register", json={"client_name": "Templated", "redirect_uris": ["http://127.0.0.1:9/cb"],
                                                               "token_endpoint_auth_method": "none"}).json()
    read = httpx2.get(f"{instance.url}/register/{registered['client_id']}",
                      headers={"Authorization": f"Bearer {registered['registration_access_token']}"})
    assert read.status_code == 200
    for n in range(3):
        httpx2.get(f"{instance.url}/no/such/path/{n}")

    text = httpx2.get(f"http://127.0.0.1:{admin_port}/metrics").text
    after = samples(text)
    assert value(after, "gatehouse_http_requests_total", method="GET", route="/register/{client_id:path}", status="200") == 1
    assert value(after, "gatehouse_http_requests_total", method="GET", route="<unmatched>", status="404") == 3
    assert registered["client_id"] not in text and "/no/such/path" not in text


def test_rate_limited_requests_are_counted_by_route(tmp_path, secret_key, start_gatehouse):
    admin_port = free_port()
    instance = start_gatehouse(None, tmp_path / "data", secret_key, extra_args=["--admin-port", str(admin_port)],
                               env={"GATEHOUSE_REGISTRATION_RATE_PER_MINUTE": "2"})
    statuses = [httpx2.post(f"{instance.url}/register", json={"client_name": "Flood", "redirect_uris": ["http://127.0.0.1:9/cb"],
                                                              "token_endpoint_auth_method": "none"}).status_code for _ in range(5)]
    assert statuses.count(201) == 2 and statuses.count(429) == 3, statuses

    after = scrape(f"http://127.0.0.1:{admin_port}/metrics")
    assert value(after, "gatehouse_rate_limited_requests_total", route="/register") == 3
    assert value(after, "gatehouse_http_requests_total", method="POST", route="/register", status="429") == 3


def test_metrics_on_the_public_port_need_the_bearer_token(tmp_path, secret_key, start_gatehouse):
    instance = start_gatehouse(None, tmp_path / "data", secret_key, env={"GATEHOUSE_METRICS_TOKEN": METRICS_TOKEN})

    missing = httpx2.get(f"{instance.url}/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "gatehouse_" not in missing.text
    for wrong in (f"Bearer {METRICS_TOKEN}x", f"Bearer {METRICS_TOKEN[:-1]}", f"Basic {METRICS_TOKEN}", "Bearer"):
        assert httpx2.get(f"{instance.url}/metrics", headers={"Authorization": wrong}).status_code == 401, wrong

    scraped = scrape(f"{instance.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert value(scraped, "gatehouse_http_requests_total", method="GET", route="/metrics", status="401") == 5


def test_a_short_metrics_token_is_refused_at_start(tmp_path, secret_key):
    from tests.production.harness import run_gatehouse

    result = run_gatehouse(["serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")], secret_key=secret_key,
                           env={"GATEHOUSE_METRICS_TOKEN": "short"}, timeout=60)
    assert result.returncode == 1
    assert "metrics_token must be at least 16 characters" in result.stderr and "Traceback" not in result.stderr


def test_workers_share_their_counts_through_the_multiprocess_directory(tmp_path, secret_key, start_gatehouse):
    """With --workers 2 every scrape of the admin port sums both processes' counters."""
    from concurrent.futures import ThreadPoolExecutor

    admin_port = free_port()
    instance = start_gatehouse(None, tmp_path / "data", secret_key,
                               extra_args=["--workers", "2", "--admin-port", str(admin_port)], env={"GATEHOUSE_WORKER_HEADER": "true"})

    def fetch_keys(_) -> str:
        with httpx2.Client(timeout=30) as client:  # a connection of its own: the kernel hands it to either worker
            response = client.get(f"{instance.url}/jwks")
            assert response.status_code == 200
            return response.headers["gatehouse-worker"]

    answered_by: list[str] = []
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # the kernel owes no fair split: ask until both workers have answered
            answered_by += pool.map(fetch_keys, range(16))
            if len(set(answered_by)) == 2:
                break
    assert len(set(answered_by)) == 2, f"one worker answered everything: {set(answered_by)}"
    scraped = scrape(f"http://127.0.0.1:{admin_port}/metrics")
    assert value(scraped, "gatehouse_http_requests_total", method="GET", route="/jwks", status="200") == len(answered_by)


def test_a_configured_multiprocess_directory_is_emptied_of_an_earlier_run(tmp_path, secret_key, start_gatehouse):
    """PROMETHEUS_MULTIPROC_DIR set by the operator: the files an earlier run left there are counts
    of that run and must not be added to this one's."""
    import subprocess
    import sys

    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    earlier_run = subprocess.run(
        [sys.executable, "-c", "from gatehouse.ops import metrics; metrics.HTTP_REQUESTS.labels('GET', '/jwks', '200').inc(1000)"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, capture_output=True, text=True,
    )
    assert earlier_run.returncode == 0, earlier_run.stderr
    assert list(metrics_dir.glob("counter_*.db"))

    admin_port = free_port()
    instance = start_gatehouse(None, tmp_path / "data", secret_key, extra_args=["--admin-port", str(admin_port)],
                               env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    for _ in range(3):
        assert httpx2.get(f"{instance.url}/jwks").status_code == 200
    scraped = scrape(f"http://127.0.0.1:{admin_port}/metrics")
    assert value(scraped, "gatehouse_http_requests_total", method="GET", route="/jwks", status="200") == 3
    assert {path.name.rsplit("_", 1)[1] for path in metrics_dir.glob("*.db")} >= {f"{instance.pid}.db"}
