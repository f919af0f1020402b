"""The retrain pipeline's own data steps (ml/pipeline_data.py) on tiny data: the seeded split (and a held-out file),
the live log's feedback, the held-out folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autooptimizer.errors import InputError
from autooptimizer.ml import pipeline_data
from autooptimizer.search.sample_data import write_tiny_domain
from autooptimizer.settings import get_settings


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    write_tiny_domain(root / "dom")
    monkeypatch.setenv("AUTOOPT_DATA_DIR", str(root))
    get_settings.cache_clear()
    return root


def test_helpers_split_filter_and_holdout_folder(data: Path, tmp_path: Path) -> None:
    from autooptimizer.ml.feedback import split_judged
    from autooptimizer.search.beir import load_beir

    fb, held = pipeline_data.domain_split("dom", seed=3)
    assert (fb, held) == split_judged([str(i) for i in range(1, 21)], 3) and len(fb) == len(held) == 10
    assert pipeline_data.normalise({"query_id": "cran/12", "dataset": None}) == {"query_id": "12", "dataset": "cran"}
    assert pipeline_data.normalise({"query_id": "12", "dataset": "cran"}) == {"query_id": "12", "dataset": "cran"}

    log = tmp_path / "fb.jsonl"
    rows = [{"query_id": f"dom/{q}", "query": "x", "model_version": "m", "judgments": {}} for q in ["1", "2", "3"]]
    rows += [{"query_id": "other/9", "query": "y", "model_version": "m", "judgments": {}},
             {"query_id": "dom/4", "query": "z", "model_version": "n", "judgments": {}}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn": ')
    assert pipeline_data.shifted_domain(log) == "dom"
    info = pipeline_data.extract_feedback(log, "dom", "m", {"2"}, tmp_path / "out.jsonl")
    kept = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["query_id"] for r in kept] == ["1", "3"] and {r["dataset"] for r in kept} == {"dom"}
    assert info["records"] == 2 and info["held_out_records_dropped"] == 1
    with pytest.raises(InputError, match="no dom record served by nobody"):
        pipeline_data.extract_feedback(log, "dom", "nobody", set(), tmp_path / "none.jsonl")

    folder = pipeline_data.holdout_folder("dom", held, tmp_path / "holdout")
    assert folder.name == "dom" and (folder / "corpus.jsonl").is_symlink()
    ds = load_beir(folder)
    assert set(ds.judged_queries()) == set(held) and set(ds.qrels) == set(held)
    full = load_beir(data / "dom")
    assert all(ds.qrels[q] == full.qrels[q] for q in held)


def test_a_held_out_file_holds_out_exactly_its_ids_and_names_unknown_ones(data: Path, tmp_path: Path) -> None:
    (tmp_path / "held.txt").write_text("3\n1\n")
    fb, held = pipeline_data.judged_split("dom", seed=0, holdout_file=tmp_path / "held.txt")
    assert held == ["1", "3"] and len(fb) == 18 and not set(fb) & set(held)
    (tmp_path / "bad.txt").write_text("1\nnope\n")
    with pytest.raises(InputError, match="not judged queries of dom"):
        pipeline_data.judged_split("dom", seed=0, holdout_file=tmp_path / "bad.txt")
    (tmp_path / "all.txt").write_text("\n".join(str(i) for i in range(1, 18)))
    with pytest.raises(InputError, match="too few judged queries to split"):
        pipeline_data.judged_split("dom", seed=0, holdout_file=tmp_path / "all.txt")


def _soak_log(path: Path, *, t0: float, before: list[tuple[str, float]], after: list[tuple[str, float]],
              shift_at: float, end: float, rate: float = 6.0) -> None:
    """A feedback log shaped like the soak's: `rate` req/s cycling through `before`'s (dataset, ndcg10) until
    `shift_at`, then through `after`'s, until `end` (seconds after t0)."""
    rows, i, t = [], 0, 0.0
    while t < end:
        mix = before if t < shift_at else after
        ds, ndcg = mix[i % len(mix)]
        rows.append({"ts": t0 + t, "query_id": f"{ds}/{i}", "dataset": None, "query": "q", "model_version": "gold",
                     "judgments": {}, "ndcg10": ndcg})
        i, t = i + 1, t + 1.0 / rate
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_shifted_domain_reads_the_gates_windows_not_the_old_majority(tmp_path: Path) -> None:
    log, t0 = tmp_path / "fb.jsonl", 1_000_000.0
    # 10 min of scifact at 6 req/s, then cisi; the retrain reads the log 30 s after the shift
    _soak_log(log, t0=t0, before=[("scifact", 0.70)], after=[("cisi", 0.30)], shift_at=600, end=630)
    assert pipeline_data.shifted_domain(log) == "scifact"  # the last 2,000 records: 1,820 are still scifact
    assert pipeline_data.shifted_domain(log, now=t0 + 630, window_s=30, baseline_window_s=120) == "cisi"


def test_shifted_domain_takes_the_domain_with_the_largest_deficit(tmp_path: Path) -> None:
    log, t0 = tmp_path / "fb.jsonl", 1_000_000.0
    # a mix: 3 of 4 requests stay on scifact (well served), 1 of 4 moves to cisi (served badly)
    _soak_log(log, t0=t0, before=[("scifact", 0.70)], after=[("scifact", 0.70)] * 3 + [("cisi", 0.20)],
              shift_at=300, end=400)
    assert pipeline_data.shifted_domain(log, now=t0 + 400, window_s=30, baseline_window_s=120) == "cisi"
    # no new domain: nfcorpus (half the traffic) regressed from 0.6 to 0.3 while scifact held
    _soak_log(log, t0=t0, before=[("scifact", 0.7), ("nfcorpus", 0.6)], after=[("scifact", 0.7), ("nfcorpus", 0.3)],
              shift_at=300, end=400)
    assert pipeline_data.shifted_domain(log, now=t0 + 400, window_s=30, baseline_window_s=120) == "nfcorpus"


def test_the_anchor_measures_the_deficit_after_a_weak_to_weak_shift(tmp_path: Path) -> None:
    log, t0 = tmp_path / "fb.jsonl", 1_000_000.0
    # 10 min of cran, then cisi served a little better: against the window before, no domain has a deficit
    _soak_log(log, t0=t0, before=[("cran", 0.38)], after=[("cisi", 0.39)], shift_at=600, end=630)
    windows = {"now": t0 + 630, "window_s": 30, "baseline_window_s": 120}
    assert pipeline_data.shifted_domain(log, **windows) == "cran"  # no positive deficit: the old majority
    assert pipeline_data.shifted_domain(log, **windows, reference=0.70) == "cisi"  # vs the champion's anchor
    assert pipeline_data.shifted_domain(log, **windows, reference=0.30) == "cran"  # a lower anchor changes nothing


def test_shifted_domain_falls_back_to_the_majority_without_timed_records(tmp_path: Path) -> None:
    log, t0 = tmp_path / "fb.jsonl", 1_000_000.0
    _soak_log(log, t0=t0, before=[("scifact", 0.7)], after=[("cisi", 0.3)], shift_at=100, end=150)
    # the windows lie after the log ends: nothing to read there -> the last records' majority (25 s of cisi)
    assert pipeline_data.shifted_domain(log, now=t0 + 10_000, window_s=30, baseline_window_s=120) == "scifact"
    assert pipeline_data.shifted_domain(log, recent=100, now=t0 + 10_000, window_s=30,
                                        baseline_window_s=120) == "cisi"

def test_a_retrain_waits_for_the_profiles_minimum_of_new_judged_feedback(data: Path, tmp_path: Path) -> None:
    """The loop's retrain reads retrain.minNewFeedback: fewer judged queries served by the current champion in the
    live log than that stops the feedback step with a clear error; exactly that many goes on."""
    from autooptimizer.ml.pipeline import PipelineState
    from autooptimizer.profiles import load_profile

    log = tmp_path / "fb.jsonl"
    rows = [{"query_id": f"dom/{q}", "query": "x", "model_version": "champ", "judgments": {f"dom/d{q}": 1}}
            for q in range(1, 5)]
    rows += [{"query_id": "dom/1", "query": "x", "model_version": "champ", "judgments": {"dom/d1": 1}},  # again
             {"query_id": "dom/9", "query": "y", "model_version": "champ", "judgments": {}},  # unjudged
             {"query_id": "dom/8", "query": "z", "model_version": "old", "judgments": {"dom/d8": 1}}]  # old champion
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def state(minimum: int | None) -> PipelineState:
        art = tmp_path / f"art{minimum}"
        art.mkdir()
        return PipelineState(domain="dom", domain_data="dom", champion="champ", artifacts=art, feedback_log=log,
                             min_feedback=minimum)

    with pytest.raises(pipeline_data.NotEnoughFeedback, match=r"Only 4 judged dom queries .* asks for 5"):
        pipeline_data.feedback_step(state(5))
    assert pipeline_data.feedback_step(state(4))["judged_queries"] == 4
    assert pipeline_data.feedback_step(state(None))["judged_queries"] == 4
    assert load_profile("prod").retrain.min_new_feedback >= load_profile("dev").retrain.min_new_feedback >= 1

    # a domain whose judged queries outside the held-out set number fewer than the minimum (cisi 38, med 15 < 40):
    # once all of them are in the log the retrain goes on; one short of them, it still waits
    exhausted = state(40)
    exhausted.feedback_qids = ["1", "2", "3", "4"]
    assert pipeline_data.feedback_step(exhausted)["judged_queries"] == 4
    short = state(41)
    short.feedback_qids = ["1", "2", "3", "4", "5"]
    with pytest.raises(pipeline_data.NotEnoughFeedback, match=r"Only 4 judged dom queries .* asks for 5"):
        pipeline_data.feedback_step(short)
