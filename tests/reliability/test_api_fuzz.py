"""Failure mode: the REST API under fuzz. Schemathesis drives the real `autoopt serve` from its own OpenAPI schema
(valid and invalid requests, each write without a token, with a wrong one and with the right one; then a server with
no token configured) plus hand-written hostile bodies. Nothing may answer 5xx or crash, no write may pass without
the token, refusals are exactly 401/403, and every answer is in the schema."""

from __future__ import annotations

from pathlib import Path

from autooptimizer.reliability.api_checks import EDGE_BODIES, run_api_fuzz


def test_fuzzed_api_never_fails_and_never_writes_without_token(tmp_path: Path) -> None:
    r = run_api_fuzz(max_examples=25, root=tmp_path)
    assert r.findings == [], r.findings
    assert r.operations == 12  # 11 + GET /health (the readiness probe: reads are loopback-only since the console)
    assert r.cases >= 12 * 25  # both modes of every operation ran (some invalid-only spaces are small)
    assert r.edge_cases >= 5 * len(EDGE_BODIES) * 2 * 2  # 5 writes x bodies x 2 auth variants x 2 servers
    assert r.requests > r.cases  # writes went out once per auth variant
    assert (r.server_errors, r.unhandled_exceptions) == (0, 0)
    assert (r.writes_accepted_without_token, r.wrong_auth_status) == (0, 0)
    assert (r.read_failures, r.unexpected_status, r.schema_violations) == (0, 0, 0)
    # only operations every input is valid for went without invalid input (no parameters, or a free-form id)
    assert set(r.no_invalid_input) <= {f"GET /api/v1/optimizer/{p}" for p in
                                       ("status", "metrics", "kill-switch", "cycles/{cycle_id}", "health")}
    assert r.triggers_accepted > 0  # authorised writes really reached the loop...
    assert r.cycles_journaled == r.triggers_accepted  # ...and each 202 is one journaled cycle
    assert r.ok
