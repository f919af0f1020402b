"""What the console's views read from the state: artifacts (diagnostic report, evaluation, A/B), decisions placed in
their steps, the model lineage, the audit log's search and pages, and GitOps history read without touching the
clone a cycle writes to."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from autooptimizer.console.views.cycle import Decision, StepView, place
from autooptimizer.console.views.evidence import read_ab, read_diagnostic, read_evaluation


def _report(tmp_path: Path) -> Path:
    from autooptimizer.ml.diagnose import DiagnosticReport, QueryExplanation, TermShift, TokenAttribution

    attrs = [TokenAttribution(token=t, value=v) for t, v in
             [("wing", 0.02), ("<b>lift</b>", -0.01), ("drag", 0.0), ("stall", 0.005)]]
    q = QueryExplanation(query_key="dom/1", query="wing lift drag stall", doc_id="dom/d1", served_ndcg10=0.1,
                         score=0.3, method="shap", attributions=attrs, under_weighted=["lift", "stall"])
    rep = DiagnosticReport(model_version="v1", explainer="shap", queries=[q], under_weighted_terms=[("lift", 1)],
                           term_shift=TermShift(jsd=0.8, jsd_in_domain_floor=0.5, oov_share=0.6, new_top_terms=[],
                                                train_top_terms=[]),
                           feedback={"queries": 1.0}, verdict="corpus_shift", evidence=["shift"], wall_seconds=1.0)
    (tmp_path / "diagnostic_report.json").write_text(rep.model_dump_json())
    return tmp_path


def test_diagnostic_tokens_keep_order_values_sign_and_strength(tmp_path: Path) -> None:
    view = read_diagnostic(_report(tmp_path))
    assert view is not None and view.error is None and view.verdict == "corpus_shift"
    toks = view.queries[0].tokens
    assert [t.text for t in toks] == ["wing", "<b>lift</b>", "drag", "stall"]
    assert [(t.sign, t.level) for t in toks] == [("pos", 5), ("neg", 3), ("zero", 0), ("pos", 2)]
    assert [t.under_weighted for t in toks] == [False, True, False, True]


def test_other_shapes_and_broken_artifacts_are_shown_not_raised(tmp_path: Path) -> None:
    assert read_diagnostic(tmp_path) is None and read_ab(tmp_path) is None and read_evaluation(tmp_path) is None
    (tmp_path / "diagnostic_report.json").write_text(json.dumps({"gate": "retries", "action": "restart"}))
    assert read_diagnostic(tmp_path).other == {"gate": "retries", "action": "restart"}
    (tmp_path / "diagnostic_report.json").write_text("{torn")
    assert "could not be read" in read_diagnostic(tmp_path).error
    (tmp_path / "ab_test_results.json").write_text(json.dumps({"verdict": "pass"}))
    assert "does not match the A/B model" in read_ab(tmp_path).error


def test_evaluation_rows_per_domain(tmp_path: Path) -> None:
    doc = {"champion": {"version": "a", "new_domain_ndcg@10": 0.43, "original_ndcg@10": 0.72},
           "challenger": {"version": "b", "new_domain_ndcg@10": 0.49, "original_ndcg@10": 0.72},
           "gold": {"version": "a", "same_as": "champion"}, "promotable": True, "reasons": ["gain"],
           "holdout": {"folder": "/x/holdout/cran", "queries": 113}, "original": "scifact test"}
    (tmp_path / "evaluation.json").write_text(json.dumps(doc))
    view = read_evaluation(tmp_path)
    assert view.domains == ["cran holdout (113 q)", "scifact test"] and view.promotable is True
    assert [(r.role, r.scores["cran holdout (113 q)"]) for r in view.rows] == \
        [("champion", 0.43), ("challenger", 0.49), ("gold", None)]


def test_an_ab_without_histograms_is_completed_from_the_feedback_log(tmp_path: Path) -> None:
    from autooptimizer.loop.abtest import ABConfig, ArmStats, judge

    rng = np.random.default_rng(0)
    x, y = list(rng.uniform(0.0, 0.5, 60)), list(rng.uniform(0.4, 1.0, 60))
    res = judge(ArmStats(model_version="a", samples=0), ArmStats(model_version="b", samples=0), x, y, ABConfig())
    t0 = time.time() - 100
    res = res.model_copy(update={"started_at": _iso(t0), "finished_at": _iso(t0 + 50)})
    assert res.control.ndcg_histogram == list(np.histogram(x, bins=10, range=(0, 1))[0])
    doc = res.model_dump(mode="json")
    for arm in ("control", "treatment"):
        doc[arm]["ndcg_histogram"] = None  # an artifact written before the histograms existed
    (tmp_path / "ab_test_results.json").write_text(json.dumps(doc))
    log = tmp_path / "feedback.jsonl"
    rows = [{"ts": t0 + 1 + i * 0.1, "model_version": v, "ndcg10": s} for v, xs in (("a", x), ("b", y))
            for i, s in enumerate(xs)] + [{"ts": t0 + 80, "model_version": "a", "ndcg10": 0.99}]  # after the test
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    view = read_ab(tmp_path, log)
    assert view.hist_source == "the feedback log over the test window"
    counts = {b.arm: [] for b in view.hist.bars}
    for b in view.hist.bars:
        counts[b.arm].append(b.count)
    assert counts == {"control": res.control.ndcg_histogram, "treatment": res.treatment.ndcg_histogram}
    assert view.ci is not None and view.ci.low == res.quality.ci_low


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def test_decisions_go_to_the_step_that_was_running() -> None:
    steps = [StepView(seq=1, name="a", status="done", started_at=10, finished_at=20, seconds=10, data={}),
             StepView(seq=2, name="b", status="started", started_at=20.5, finished_at=None, seconds=None, data={})]
    ds = [Decision(seq=i, ts=ts, agent="x", tool=f"t{i}", decision="permit") for i, ts in enumerate([12, 20.2, 25])]
    unplaced = place(steps, ds)
    assert [d.tool for d in steps[0].decisions] == ["t0"] and [d.tool for d in steps[1].decisions] == ["t2"]
    assert [d.tool for d in unplaced] == ["t1"]


def test_audit_search_and_pages_newest_first() -> None:
    from autooptimizer.console.views.audit import PAGE_SIZE, audit_page
    from autooptimizer.policies.audit import AuditLog

    log = AuditLog()
    for i in range(PAGE_SIZE + 5):
        log.append({"kind": "note", "actor": "test", "n": i, "tag": "even" if i % 2 == 0 else "odd"})
    first = audit_page()
    assert first.ok and first.records_total == PAGE_SIZE + 5 and first.pages == 2
    assert [r["n"] for r in first.rows[:2]] == [PAGE_SIZE + 4, PAGE_SIZE + 3]
    assert len(audit_page(page=2).rows) == 5 and audit_page(page=99).page == 2
    odd = audit_page("ODD")
    assert odd.matches == (PAGE_SIZE + 5) // 2 and all(r["tag"] == "odd" for r in odd.rows)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:3] + ['{"seq": 4, "edited": true}'] + lines[4:]) + "\n")
    broken = audit_page()
    assert not broken.ok and broken.broken_seq == 4


def test_models_show_lineage_aliases_and_scores(tmp_path: Path) -> None:
    from autooptimizer.console.views.models import read_models
    from autooptimizer.search import aliases, model_store
    from autooptimizer.search.model_store import ModelSpec
    from autooptimizer.settings import get_settings

    model_store.save(ModelSpec(version="p", kind="bm25", fusion_weight=0.0))
    model_store.save(ModelSpec(version="c", kind="bm25", fusion_weight=0.0, parent="p", params={"n": 1},
                               notes="ltr expert on dataset 0123456789abcdef, gated"))
    model_store.save(ModelSpec(version="g", kind="bm25", fusion_weight=0.0, params={"n": 2}))
    aliases.set_alias("champion", "c")
    aliases.set_alias("gold", "p")
    settings = get_settings()
    manifest = settings.home / "datasets" / "0123456789abcdef" / "dataset_manifest.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("hash: 0123456789abcdef\ndomains: [dom]\n")
    art = settings.home / "artifacts" / "si_2026_01_01_001"
    art.mkdir(parents=True)
    (art / "evaluation.json").write_text(json.dumps({
        "champion": {"version": "p", "new_domain_ndcg@10": 0.4, "original_ndcg@10": 0.7},
        "challenger": {"version": "c", "new_domain_ndcg@10": 0.5, "original_ndcg@10": 0.7},
        "holdout": {"folder": "/x/dom"}, "original": "scifact test"}))
    view = read_models(settings)
    # roots in the store's order (created, then name: all made in the same second here), children under them
    assert [(r.version, r.depth) for r in view.rows] == [("g", 0), ("p", 0), ("c", 1)]
    by = {r.version: r for r in view.rows}
    assert by["c"].aliases == ["champion"] and by["p"].aliases == ["gold"] and by["p"].children == ["c"]
    assert by["c"].dataset == "0123456789abcdef" and by["c"].manifest == {"hash": "0123456789abcdef",
                                                                           "domains": ["dom"]}
    assert by["c"].scores == {"dom holdout": 0.5, "scifact test": 0.7}
    assert view.served is None and "unreachable" in (view.served_error or "")  # no service: said, not raised
    assert math.isclose(by["p"].scores["dom holdout"], 0.4)


def test_gitops_history_is_read_without_touching_the_clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A page view must not `reset --hard` the working clone a running cycle writes to."""
    from autooptimizer.console.views.gitops import cycle_commits, desired_state
    from autooptimizer.loop.gitops import GitOpsRepo, HelmPatch
    from autooptimizer.settings import get_settings

    settings = get_settings()
    repo = GitOpsRepo(settings, settings.env)
    repo.commit_patch(HelmPatch(model_version="v-a"), "baseline")
    sha = repo.commit_patch(HelmPatch(model_version="v-b", replicas=2), "Promote v-b", cycle_id="si_2026_01_01_007")
    half_written = repo.checkout / repo.rel_path
    half_written.write_text("search: {modelVersion: half-written}\n")  # a cycle mid-commit
    commits, error = cycle_commits(settings, "si_2026_01_01_007")
    assert error is None and [c.sha for c in commits] == [sha] and commits[0].subject == "Promote v-b"
    assert "+  modelVersion: v-b" in commits[0].diff and "-  modelVersion: v-a" in commits[0].diff
    state = desired_state(settings)
    assert state.revision == sha and state.patch == {"modelVersion": "v-b", "replicas": 2,
                                                     "canary": {"modelVersion": None, "weight": 0.0}}
    assert half_written.read_text() == "search: {modelVersion: half-written}\n"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo.checkout, capture_output=True, text=True)
    assert repo.rel_path in status.stdout
