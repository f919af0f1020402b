"""Failure mode: the REST API under load. 50 concurrent loopback clients for 20 s against the real `autoopt serve`:
reads, triggers, approve/deny of real pending requests and kill-switch flips. Every read answers, one cycle runs at
a time, and every accepted write shows exactly once in the journal, the approvals store and the audit log."""

from __future__ import annotations

from pathlib import Path

from autooptimizer.reliability.api_checks import run_api_load


def test_fifty_clients_lose_nothing(tmp_path: Path) -> None:
    r = run_api_load(clients=50, seconds=20, approvals=200, root=tmp_path)
    assert r.problems == [], r.problems
    assert r.requests > 1000 and r.reads > 500  # real load, not a trickle
    assert (r.read_errors, r.write_errors, r.server_errors, r.unhandled_exceptions) == (0, 0, 0, 0)
    # one cycle at a time: the others were told 409, and the journal shows no two cycles running together
    assert r.triggers_accepted > 1 and r.triggers_busy > 0
    assert r.triggers_accepted + r.triggers_busy == r.triggers_sent
    assert r.cycles_journaled == r.triggers_accepted and r.overlapping_cycles == 0 and r.cycles_left_running == 0
    # every approval decided at most once; the losing decisions were refused (409), not lost
    assert 0 < r.approval_decisions_accepted <= r.approvals_created and r.approval_decisions_refused > 0
    # every flip audited, the chain intact
    assert r.kill_switch_flips > 0 and r.kill_switch_audit_records == r.kill_switch_flips
    assert r.audit_ok and r.audit_records >= r.kill_switch_flips + r.approvals_created + r.approval_decisions_accepted
    assert r.lost_updates == 0 and r.ok


def test_reconciling_catches_lost_and_phantom_writes(autoopt_home: Path) -> None:
    """The bookkeeping itself can fail: writes answered 2xx that left no trace, and a trace no answer accounts for."""
    from autooptimizer.policies.approvals import ApprovalStore
    from autooptimizer.policies.killswitch import kill_switch
    from autooptimizer.reliability.api_checks import LoadResult, _Call, _count_calls, _reconcile

    store = ApprovalStore()
    ids = [store.request(tool="scale_service", agent="devops", env="dev", args={"replicas": i}, reason="t",
                         policies=["p"]).id for i in (2, 3, 4)]
    store.approve(ids[0], by="api")  # answered 200 below: consistent
    store.deny(ids[1], by="api")  # a decision no answer accounts for: phantom
    kill_switch.set(True, by="api")  # one flip audited, two answered 200 below: one lost

    def call(kind: str, status: int, target: str | None = None) -> _Call:
        return _Call(kind=kind, status=status, ms=1.0, sent=0.0, answered=0.0, target=target)

    calls = [call("trigger", 202), call("flip", 200, "on"), call("flip", 200, "on"), call("status", 200),
             call("decide", 200, f"{ids[0]}:approve"), call("decide", 409, f"{ids[0]}:deny")]
    r = LoadResult(clients=1, seconds=1.0)
    _count_calls(r, calls)
    _reconcile(r, calls, autoopt_home, ids)
    assert (r.triggers_accepted, r.cycles_journaled) == (1, 0)
    assert (r.kill_switch_flips, r.kill_switch_audit_records) == (2, 1)
    assert r.lost_updates == 3 and not r.ok  # the missing cycle, the missing flip record, the phantom denial
    assert any(ids[1] in p for p in r.problems) and not any(ids[0] in p for p in r.problems)
    assert r.audit_ok and r.read_errors == 0
