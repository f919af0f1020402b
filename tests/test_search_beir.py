"""BEIR loading: splits, qrels layouts, clear errors naming file and line, and the prefixed Collection."""

from __future__ import annotations

import pytest

from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.search.beir import Collection, load_beir
from autooptimizer.search.sample_data import write_tiny_beir


def test_load_single_qrels(tmp_path):
    ds = load_beir(write_tiny_beir(tmp_path / "tiny", docs_per_topic=5), name="tiny")
    assert len(ds.corpus) == 30 and len(ds.queries) == 6
    assert ds.qrels["q-heart"] == {"heart0": 2, "heart1": 1, "heart2": 1, "heart3": 1, "heart4": 1}
    assert ds.corpus["wing3"].title.startswith("Study 3")
    assert set(ds.judged_queries()) == set(ds.queries)


def test_split_filters_queries_and_qrels(tmp_path):
    root = write_tiny_beir(tmp_path / "sf", with_split=True)
    train, test = load_beir(root, split="train"), load_beir(root, split="test")
    assert set(train.queries) == {"q-heart", "q-wing", "q-ocean"}
    assert set(test.queries) == {"q-brain", "q-soil", "q-virus"}
    assert set(train.qrels) == set(train.queries) and not set(train.qrels) & set(test.qrels)
    full = load_beir(root)
    assert len(full.queries) == 6 and len(full.qrels) == 6
    with pytest.raises(NotFoundError, match="dev"):
        load_beir(root, split="dev")


def test_corrupt_line_is_named(tmp_path):
    root = write_tiny_beir(tmp_path / "bad")
    lines = (root / "corpus.jsonl").read_text().splitlines()
    lines[3] = '{"_id": "x", "text": '
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        load_beir(root)
    assert "corpus.jsonl line 4" in exc.value.problem


def test_bad_qrels_and_missing_files(tmp_path):
    root = write_tiny_beir(tmp_path / "q")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq-heart\theart0\tvery\n")
    with pytest.raises(InputError, match="qrels.tsv line 2"):
        load_beir(root)
    (root / "corpus.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        load_beir(root)
    (root / "queries.jsonl").unlink()
    with pytest.raises(NotFoundError, match="queries.jsonl"):
        load_beir(root)
    with pytest.raises(NotFoundError, match="does not exist"):
        load_beir(tmp_path / "nowhere")


def test_collection_prefixes_ids(tmp_path):
    a = load_beir(write_tiny_beir(tmp_path / "a", topics=["heart", "brain"]), name="a")
    b = load_beir(write_tiny_beir(tmp_path / "b", topics=["wing"]), name="b")
    col = Collection([a, b])
    assert len(col) == 15 and col.doc_ids[0] == "a/heart0" and col.doc_ids[-1] == "b/wing4"
    assert col.qrels("b")["q-wing"] == {"b/wing0": 2, "b/wing1": 1, "b/wing2": 1, "b/wing3": 1, "b/wing4": 1}
    assert col.text("a/heart0").startswith("Study 0 on cardiac arrest. This paper")
    assert Collection([a, b]).content_hash() == col.content_hash() != Collection([a]).content_hash()
    with pytest.raises(InputError, match="Duplicate"):
        Collection([a, a])
