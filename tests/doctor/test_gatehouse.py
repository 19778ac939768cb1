"""Against ``gatehouse serve``'s app (the AS with the guarded demo at ``<issuer>/mcp``): every check passes.

``--login`` signs in through the BROWSER stand-in of tests/client (login form, consent). The
audience check needs a second resource of the same AS; with one configured (``--other-resource``)
every check passes, and with the default single resource that one check is skipped, saying why.
"""

from __future__ import annotations

from tests.doctor.conftest import run_doctor

SCHEMA_KEYS = {"schema", "target", "login", "duration_ms", "exit_code", "counts", "checks"}
CHECK_KEYS = {"id", "group", "role", "status", "summary", "evidence", "fix", "requirement", "pitfall"}
LOGIN_CHECKS = {"login.authorization", "login.token_format", "login.audience", "login.lifetime", "login.scope", "login.call",
                "login.other_resource", "login.audience_validation", "login.revocation", "login.refresh", "login.refresh_reuse"}


def test_every_check_passes_without_login(live_as):
    run = run_doctor(live_as.resource, "--json")
    assert run.exit_code == 0
    report = run.report
    assert set(report) == SCHEMA_KEYS and report["schema"] == "gatehouse.doctor/1" and report["exit_code"] == 0
    assert report["counts"] == {"pass": len(report["checks"]), "warn": 0, "fail": 0, "skipped": 0}
    for check in report["checks"]:
        assert set(check) == CHECK_KEYS and check["evidence"], check["id"]
    groups = {c["group"] for c in report["checks"]}
    assert groups == {"challenge", "protected-resource-metadata", "authorization-server-metadata", "registration", "cors"}
    assert run.check("as.issuer")["summary"] == f"issuer '{live_as.base_url}' is identical to the issuer the URL was built from"
    assert run.check("prm.resource")["summary"] == f"resource {live_as.resource} is this server"


def test_every_check_passes_with_login_and_another_resource(gatehouse_with_another_resource, browser):
    live, other = gatehouse_with_another_resource
    agent = browser(live)
    run = run_doctor(live.resource, "--login", "--other-resource", other, "--json")
    assert run.exit_code == 0, run.failing()
    statuses = run.statuses()
    assert LOGIN_CHECKS <= set(statuses)
    assert set(statuses.values()) == {"pass"}, {k: v for k, v in statuses.items() if v != "pass"}
    assert run.check("login.audience")["summary"] == f"aud is {live.resource}, the resource requested"
    assert run.check("login.other_resource")["summary"] == f"a token requested for {other} has that aud"
    assert run.check("login.audience_validation")["summary"] == f"a token for {other} gets 401"
    assert len(agent.opened()) == 2  # this server, then the other resource (whose grant is then revoked)


def test_login_against_the_default_single_resource(live_as, browser):
    agent = browser(live_as)
    run = run_doctor(live_as.resource, "--login", "--json")
    assert run.exit_code == 0, run.failing()
    statuses = run.statuses()
    assert statuses.pop("login.audience_validation") == "skipped"
    assert set(statuses.values()) == {"pass"}, {k: v for k, v in statuses.items() if v != "pass"}
    assert "--other-resource" in run.check("login.audience_validation")["summary"]
    other = run.check("login.other_resource")
    assert "invalid_target" in other["summary"] and other["evidence"][0]["status"] == 400
    assert len(agent.opened()) == 2  # this server, then a spare grant to revoke; nobody signs in for the refused resource


def test_the_readable_report_groups_by_role(live_as):
    run = run_doctor(live_as.resource)
    assert run.exit_code == 0
    for role in ("MCP server (resource server)", "Authorization server", "Browser-based clients (CORS)"):
        assert role in run.output
    assert "0 failed, 0 warnings" in run.output and "✓ pass challenge.status" in run.output
