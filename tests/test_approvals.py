"""Approvals: durable (SQLite under AUTOOPT_HOME), bound to one exact call, usable once, timing out to denied."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from autooptimizer.cli.app import app
from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.policies.approvals import ApprovalStore, call_hash
from autooptimizer.policies.audit import AuditLog

ARGS = {"model_version": "7", "note": ""}


def _request(store: ApprovalStore, **kw: object):
    fields = {"tool": "promote_model", "agent": "devops", "env": "staging", "args": ARGS,
              "reason": "staging promotions need a human approval", "policies": ["staging.promote-approval"],
              "evidence": {"ab_p_value": 0.01, "ndcg_delta": 0.04}, "requested_by": "supervisor",
              "cycle_id": "c-1", **kw}
    return store.request(**fields)  # type: ignore[arg-type]


def test_request_records_what_why_evidence_and_who(autoopt_home) -> None:
    store = ApprovalStore()
    req = _request(store)
    assert store.path == autoopt_home / "approvals.db"
    got = store.get(req.id)
    assert (got.tool, got.agent, got.env, got.args) == ("promote_model", "devops", "staging", ARGS)
    assert (got.reason, got.policies, got.evidence) == (req.reason, ["staging.promote-approval"],
                                                        {"ab_p_value": 0.01, "ndcg_delta": 0.04})
    assert (got.requested_by, got.status, got.cycle_id) == ("supervisor", "pending", "c-1")
    assert got.expires_at - got.created_at == pytest.approx(3600)
    assert got.call_hash == call_hash("promote_model", ARGS, "devops", "staging")


def test_call_hash_changes_with_any_part_of_the_call() -> None:
    base = call_hash("promote_model", ARGS, "devops", "staging")
    assert base == call_hash("promote_model", dict(reversed(list(ARGS.items()))), "devops", "staging")
    assert base != call_hash("promote_model", {**ARGS, "model_version": "8"}, "devops", "staging")
    assert base != call_hash("promote_model", ARGS, "devops", "prod")
    assert base != call_hash("promote_model", ARGS, "ml", "staging")
    assert base != call_hash("rollback_deployment", ARGS, "devops", "staging")


def test_approval_survives_a_restart_and_is_used_once() -> None:
    req = _request(ApprovalStore())
    ApprovalStore().approve(req.id, "alice", "looks good")  # another process/store on the same db
    restarted = ApprovalStore()
    got = restarted.get(req.id)
    assert (got.status, got.decided_by, got.note) == ("approved", "alice", "looks good")
    assert restarted.check(req.id, req.call_hash) == (True, None)
    assert restarted.consume(req.id, req.call_hash) is True
    assert ApprovalStore().consume(req.id, req.call_hash) is False  # never twice
    ok, why = ApprovalStore().check(req.id, req.call_hash)
    assert not ok and "used" in why


def test_approval_cannot_be_replayed_for_a_different_call() -> None:
    store = ApprovalStore()
    req = _request(store)
    store.approve(req.id, "alice")
    other = call_hash("promote_model", {**ARGS, "model_version": "666"}, "devops", "staging")
    ok, why = store.check(req.id, other)
    assert not ok and "different call" in why
    assert store.consume(req.id, other) is False
    assert store.get(req.id).status == "approved"  # still usable for the call it was given for
    assert store.consume(req.id, req.call_hash) is True


def test_unanswered_request_times_out_as_denied() -> None:
    store = ApprovalStore(timeout_s=0.05)
    req = _request(store)
    time.sleep(0.1)
    got = ApprovalStore().get(req.id)
    assert (got.status, got.decided_by) == ("denied", "timeout")
    with pytest.raises(InputError, match="is denied"):
        store.approve(req.id, "late-alice")
    assert store.check(req.id, req.call_hash)[0] is False


def test_approved_but_unused_approval_expires() -> None:
    store = ApprovalStore()  # the request stays pending however long its audited write takes
    req = _request(store)
    ApprovalStore(timeout_s=0.05).approve(req.id, "alice")  # ... and must be used within 50 ms
    time.sleep(0.1)
    ok, why = store.check(req.id, req.call_hash)
    assert not ok and "expired" in why
    assert store.consume(req.id, req.call_hash) is False


def test_only_pending_requests_can_be_answered_and_unknown_ids_are_clear() -> None:
    store = ApprovalStore()
    req = _request(store)
    store.deny(req.id, "bob", "not now")
    with pytest.raises(InputError, match="is denied"):
        store.approve(req.id, "alice")
    assert store.check(req.id, req.call_hash) == (False, f"Approval {req.id} is denied (not now).")
    with pytest.raises(NotFoundError, match="apr-nope"):
        store.get("apr-nope")
    with pytest.raises(NotFoundError):
        store.approve("apr-nope")


def test_list_filters_and_answers_are_audited() -> None:
    store = ApprovalStore()
    a, b = _request(store), _request(store, tool="delete_model", agent="ml", args={"name": "m", "version": "2"})
    store.approve(a.id, "alice")
    assert [r.id for r in store.list("pending")] == [b.id]
    assert [r.id for r in store.list()] == [a.id, b.id]
    kinds = [(r["kind"], r.get("approval_id")) for r in AuditLog().records()]
    assert kinds == [("approval_requested", a.id), ("approval_requested", b.id), ("approval_approved", a.id)]
    assert AuditLog().verify().ok


def test_cli_list_approve_deny() -> None:
    store = ApprovalStore()
    a, b = _request(store), _request(store)
    runner = CliRunner()
    out = runner.invoke(app, ["approvals", "list"])
    assert out.exit_code == 0 and a.id in out.output and "staging promotions need a human approval" in out.output
    assert "ab_p_value" in out.output
    out = runner.invoke(app, ["approvals", "approve", a.id, "--by", "carol"])
    assert out.exit_code == 0 and f"approved {a.id}" in out.output
    out = runner.invoke(app, ["approvals", "deny", b.id, "--note", "no"])
    assert out.exit_code == 0
    listed = json.loads(runner.invoke(app, ["approvals", "list", "--json"]).stdout)
    assert {r["id"]: r["status"] for r in listed} == {a.id: "approved", b.id: "denied"}
    assert ApprovalStore().get(a.id).decided_by == "carol"
