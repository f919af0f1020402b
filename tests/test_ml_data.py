"""Datasets from the feedback log (immutable, hash-addressed), augmentation determinism, feedback parsing."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.ml.augment import augment_dataset, weak_slice
from autooptimizer.ml.dataset import MANIFEST, build_dataset, datasets_root, load_dataset
from autooptimizer.ml.feedback import read_feedback, read_qids, split_judged


def _record(qid: str, text: str, judged: dict[str, int], served: list[str], ndcg: float | None) -> dict:
    return {"ts": 1.0, "query_id": qid, "dataset": "dom", "query": text, "model_version": "v1-champ",
            "request_id": None, "served": [{"doc_id": d, "score": 1.0 / (i + 1)} for i, d in enumerate(served)],
            "judgments": judged, "ndcg10": ndcg}


def write_log(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "feedback.jsonl", [
        _record("1", "wing flutter at supersonic speed", {"dom/a": 2, "dom/b": 1, "dom/z": 0},
                ["dom/c", "dom/a", "dom/d", "dom/z"], 0.4),
        _record("2", "heat transfer in boundary layers", {"dom/e": 1}, ["dom/e", "dom/f"], 0.9),
        _record("3", "shock wave drag of thin wings", {"dom/g": 3}, ["dom/h", "dom/i", "dom/g"], 0.2),
        # the same query served again: its pairs must not be duplicated
        _record("1", "wing flutter at supersonic speed", {"dom/a": 2, "dom/b": 1}, ["dom/a", "dom/c"], 0.8),
    ])


def test_pairs_positives_hard_negatives_and_dedup(log: Path) -> None:
    m = build_dataset(log)
    ds = load_dataset(m.hash)
    keys = {(p.query_key, p.doc_id): p for p in ds.pairs}
    assert len(keys) == len(ds.pairs), "pairs are deduplicated"
    assert keys[("dom/1", "dom/a")].kind == "positive" and keys[("dom/1", "dom/a")].label == 2
    assert keys[("dom/1", "dom/c")].kind == "hard_negative", "served but not relevant -> hard negative"
    assert keys[("dom/1", "dom/z")].kind == "judged_negative"
    assert keys[("dom/3", "dom/h")].kind == "hard_negative"
    assert m.counts.queries == 3
    assert m.counts.positives == 4
    assert m.counts.hard_negatives == 5  # c, d (q1); f (q2); h, i (q3)
    assert m.parent_version == "v1-champ"
    assert m.domains == ["dom"]


def test_manifest_is_hash_addressed_and_immutable(log: Path) -> None:
    m1 = build_dataset(log)
    folder = datasets_root() / m1.hash
    manifest = yaml.safe_load((folder / MANIFEST).read_text())
    assert manifest["hash"] == m1.hash and manifest["counts"]["pairs"] == m1.counts.pairs
    assert manifest["sources"][0]["records"] == 4 and len(manifest["sources"][0]["sha256"]) == 64
    assert manifest["augmentation"] is None
    mtime = (folder / "pairs.jsonl").stat().st_mtime_ns
    m2 = build_dataset(log)  # same content -> same address, nothing rewritten
    assert m2.hash == m1.hash
    assert (folder / "pairs.jsonl").stat().st_mtime_ns == mtime
    assert not os.access(folder / "pairs.jsonl", os.W_OK) or os.geteuid() == 0
    assert not (folder / "pairs.jsonl").stat().st_mode & 0o222, "stored files are read-only"
    # different content -> different address
    other = write_log(log.parent / "other.jsonl", [json.loads(log.read_text().splitlines()[1])])
    assert build_dataset(other).hash != m1.hash


def test_tampered_dataset_is_rejected(log: Path) -> None:
    m = build_dataset(log)
    pairs = datasets_root() / m.hash / "pairs.jsonl"
    pairs.chmod(0o644)
    pairs.write_text(pairs.read_text().replace('"label": 2', '"label": 4'))
    with pytest.raises(InputError, match="does not match its manifest hash"):
        load_dataset(m.hash)


def test_corrupt_and_empty_inputs_give_clear_errors(tmp_path: Path, log: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(log.read_text() + "{not json\n")
    with pytest.raises(InputError, match="line 5"):
        build_dataset(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no records"):
        build_dataset(empty)
    no_pos = write_log(tmp_path / "nopos.jsonl", [_record("9", "q", {"dom/x": 0}, ["dom/x"], 0.0)])
    with pytest.raises(InputError, match="no positive"):
        build_dataset(no_pos)
    with pytest.raises(NotFoundError):
        build_dataset(tmp_path / "missing.jsonl")
    m = build_dataset(log)
    manifest = datasets_root() / m.hash / MANIFEST
    manifest.chmod(0o644)
    manifest.write_text("hash: [unclosed\n")
    with pytest.raises(InputError, match="corrupt"):
        load_dataset(m.hash)
    with pytest.raises(NotFoundError):
        load_dataset("feedfacecafe")
    assert not list(datasets_root().glob(".*")), "no temp folders left behind"


def test_augmentation_is_deterministic_and_traceable(tmp_path: Path, log: Path) -> None:
    m = build_dataset(log)
    a = augment_dataset(m.hash, tmp_path / "a.csv", size=12, seed=7)
    b = augment_dataset(m.hash, tmp_path / "b.csv", size=12, seed=7)
    c = augment_dataset(m.hash, tmp_path / "c.csv", size=12, seed=8)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert a.sha256 == b.sha256 != c.sha256
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert len(rows) == 12
    assert set(a.methods) == {"keyboard", "ocr", "word_swap", "word_delete", "spelling"}
    assert all(v >= 2 for v in a.methods.values()), "the mix is used round-robin"
    ds = load_dataset(m.hash)
    weak = {q.query_key for q in weak_slice(ds.queries, 0.5)}
    assert weak == {"dom/3", "dom/1"}, "the worse-served half (q1 latest nDCG 0.8, q3 0.2; q2 0.9 is not weak)"
    for r in rows:
        src = ds.queries[int(r["source_row"])]
        assert src.query_key == r["query_key"] and src.text == r["original"]
        assert r["query_key"] in weak and r["method"] in a.methods
    assert sum(r["augmented"] != r["original"] for r in rows) >= 10, "augmentation changes the text"
    # the augmented dataset extends its parent and records the recipe
    m2 = build_dataset(log, augmented_csv=tmp_path / "a.csv", parent_dataset=m.hash, augmentation=a.recipe())
    assert m2.hash != m.hash and m2.parent_dataset == m.hash
    assert m2.counts.augmented_queries == 12 and m2.augmentation["seed"] == 7
    assert len(load_dataset(m2.hash).augmented_queries()) == 12


def test_augment_rejects_bad_arguments(log: Path, tmp_path: Path) -> None:
    m = build_dataset(log)
    with pytest.raises(InputError):
        augment_dataset(m.hash, tmp_path / "x.csv", size=0)
    with pytest.raises(InputError, match="Unknown augmentation"):
        augment_dataset(m.hash, tmp_path / "x.csv", size=2, mix=["telepathy"])
    with pytest.raises(InputError, match="empty mix"):  # it used to write the default methods' rows
        augment_dataset(m.hash, tmp_path / "x.csv", size=2, mix=[])
    assert not (tmp_path / "x.csv").exists()


def test_augment_cli_refuses_a_mix_that_names_nothing(log: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autooptimizer.cli.app import app

    m = build_dataset(log)
    for mix in ("", " , "):
        out = CliRunner().invoke(app, ["augment", "--dataset", m.hash, "--out", str(tmp_path / "a.csv"),
                                      "--size", "2", "--mix", mix])
        assert isinstance(out.exception, InputError) and "empty mix" in str(out.exception), out.output
    assert not (tmp_path / "a.csv").exists()


def test_augment_tool_refuses_a_mix_that_names_nothing(log: Path, tmp_path: Path) -> None:
    """The agents' tool read `mix: []` as "no mix given" (`if args.mix`) and wrote the default methods' rows: the
    empty mix the CLI and the function refuse got through the tool."""
    from autooptimizer.tools import load_all_tools

    m = build_dataset(log)
    out = tmp_path / "t.csv"
    res = load_all_tools().call("data", "augment_dataset", {"dataset": m.hash, "out_csv": str(out), "size": 2,
                                                            "mix": []}, env="dev", requested_by="test")
    assert res.error is not None and "mix" in res.error, res
    assert not out.exists()
    ok = load_all_tools().call("data", "augment_dataset", {"dataset": m.hash, "out_csv": str(out), "size": 2,
                                                           "mix": ["ocr"]}, env="dev", requested_by="test")
    assert ok.error is None and ok.result is not None and ok.result["methods"] == {"ocr": 2}, ok


def test_feedback_split_and_qids(tmp_path: Path, log: Path) -> None:
    assert len(read_feedback(log)) == 4
    fb, ho = split_judged([str(i) for i in range(11)], seed=3)
    assert len(fb) == 5 and len(ho) == 6 and not set(fb) & set(ho)
    assert split_judged([str(i) for i in range(11)], seed=3) == (fb, ho)
    assert split_judged([str(i) for i in range(11)], seed=4) != (fb, ho)
    (tmp_path / "ids.txt").write_text("# held out\n3\n7\n\n")
    assert read_qids(tmp_path / "ids.txt") == ["3", "7"]
    (tmp_path / "ids.json").write_text('["a", 2]')
    assert read_qids(tmp_path / "ids.json") == ["a", "2"]


def test_augmentation_is_identical_across_processes(tmp_path: Path, log: Path) -> None:
    """Same seed, same bytes, whatever PYTHONHASHSEED the process got (nlpaug keeps candidates in sets)."""
    import subprocess
    import sys

    m = build_dataset(log)
    outs = []
    for hs in ("1", "2"):
        out = tmp_path / f"p{hs}.csv"
        code = ("from autooptimizer.ml.augment import augment_dataset as a; "
                f"a({m.hash!r}, {str(out)!r}, size=8, mix=['spelling', 'keyboard'], seed=3)")
        env = {**os.environ, "PYTHONHASHSEED": hs}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, timeout=300)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_the_live_logs_query_ids_give_the_dataset_its_domain(tmp_path: Path) -> None:
    """The service's log (what the chat's data agent builds from) carries query_id "<dataset>/<id>" and no dataset:
    a dataset built from it must know its domain, or training refuses it ("dataset records no domain")."""
    from autooptimizer.ml.feedback import FeedbackRecord

    rec = FeedbackRecord(query="q", model_version="v1", judgments={"cran/7": 1}, query_id="cran/12")
    assert (rec.dataset, rec.query_id, rec.key) == ("cran", "12", "cran/12")
    kept = FeedbackRecord(query="q", model_version="v1", judgments={}, query_id="x/1", dataset="cisi")
    assert (kept.dataset, kept.query_id) == ("cisi", "x/1"), "an explicit dataset is never overwritten"
    log = tmp_path / "live.jsonl"
    log.write_text(json.dumps({"query": "flow over a plate", "model_version": "v1", "query_id": "cran/12",
                               "judgments": {"cran/7": 2}, "served": [{"doc_id": "cran/7"}, {"doc_id": "cran/9"}]})
                   + "\n")
    assert build_dataset(log).domains == ["cran"]
