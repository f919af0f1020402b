"""Offline evaluation of a stored version on a dataset split."""

from __future__ import annotations

import pytest

from autooptimizer.errors import NotFoundError
from autooptimizer.search import model_store
from autooptimizer.search.evaluate import evaluate
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.sample_data import write_tiny_beir


def test_evaluate_split(tmp_path):
    root = write_tiny_beir(tmp_path / "sf", with_split=True)
    model_store.save(ModelSpec(version="v-bm25", kind="bm25", fusion_weight=0.0))
    train = evaluate("v-bm25", str(root), split="train")
    test = evaluate("v-bm25", str(root), split="test")
    assert train.n_queries == 3 and set(train.per_query) == {"q-heart", "q-wing", "q-ocean"}
    assert set(test.per_query) == {"q-brain", "q-soil", "q-virus"}
    assert 0.7 < train.ndcg10 <= 1.0
    assert train.ndcg10 == pytest.approx(sum(train.per_query.values()) / 3, abs=1e-4)
    with pytest.raises(NotFoundError):
        evaluate("v-missing", str(root))
