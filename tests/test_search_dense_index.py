"""The dense candidates' nearest-neighbour search: exact below the threshold, a deterministic HNSW graph above."""

from __future__ import annotations

import numpy as np
import pytest

from autooptimizer.search.dense_index import DenseIndex


def _clustered(n: int, dim: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 20 centres (text embeddings cluster by topic; uniform random vectors would not)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    vecs = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    queries = centres[rng.integers(0, 20, 30)] + 0.8 * rng.standard_normal((30, dim))
    return vecs, (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def test_the_exact_scan_ranks_by_inner_product_ties_to_the_lower_row() -> None:
    rows = np.array([7, 2, 9])
    index = DenseIndex(rows, np.array([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]]))
    assert index.exact
    assert index.nearest(np.array([0.0, 1.0]), 2).tolist() == [2, 7]
    assert index.nearest(np.array([1.0, 0.0]), 5).tolist() == [9, 2, 7], "k above the corpus: every row"
    assert index.nearest(np.array([1.0, 0.0]), 0).tolist() == []


def test_the_graph_finds_almost_every_true_neighbour_and_serves_rows_not_positions() -> None:
    vecs, queries = _clustered(3000)
    rows = np.arange(3000, dtype=np.int64) * 3 + 100  # collection rows, not positions in the corpus
    graph, exact = DenseIndex(rows, vecs, exact_below=0), DenseIndex(rows, vecs)
    assert not graph.exact and exact.exact
    recall = [len(set(graph.nearest(q, 100)) & set(exact.nearest(q, 100))) / 100 for q in queries]
    assert np.mean(recall) >= 0.95, recall
    got = graph.nearest(queries[0], 100)
    assert len(got) == 100 and set(got) <= set(rows.tolist())
    sims = {r: float(v @ queries[0]) for r, v in zip(rows.tolist(), vecs, strict=True)}
    assert all(sims[a] >= sims[b] - 1e-6 for a, b in zip(got, got[1:], strict=False)), "nearest first"


def test_two_graphs_of_the_same_vectors_give_the_same_lists() -> None:
    """Training and serving build their own index: equal lists are what makes the served expert the trained one."""
    vecs, queries = _clustered(2000, seed=3)
    rows = np.arange(2000, dtype=np.int64)
    a, b = DenseIndex(rows, vecs, exact_below=0), DenseIndex(rows, vecs, exact_below=0)
    for q in queries:
        assert a.nearest(q, 50).tolist() == b.nearest(q, 50).tolist()


def test_rows_and_vectors_must_match() -> None:
    with pytest.raises(ValueError, match="3 rows but 2 vectors"):
        DenseIndex(np.arange(3), np.zeros((2, 4)))


@pytest.mark.parametrize("exact_below", [None, 0])
def test_a_query_of_the_wrong_dimension_is_an_error_that_says_so(exact_below: int | None) -> None:
    """The graph answered a 47-dimension query with faiss's bare AssertionError (no message), the scan with numpy's
    matmul gufunc signature: both now name the dimensions."""
    vecs, _ = _clustered(50)
    index = DenseIndex(np.arange(50), vecs, exact_below=exact_below)
    for q in (np.ones(47, dtype=np.float32), np.ones((1, 48), dtype=np.float32)):
        with pytest.raises(ValueError, match=r"query vector of shape \(.*\); the index holds 48-dimension vectors"):
            index.nearest(q, 5)
    assert len(index.nearest(np.ones(48), 5)) == 5


def test_a_graph_without_faiss_installed_is_an_error_that_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from autooptimizer.errors import ConfigError

    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` meets where it is not installed
    vecs, _ = _clustered(50)
    with pytest.raises(ConfigError, match="needs faiss") as info:
        DenseIndex(np.arange(50), vecs, exact_below=0)
    assert "faiss-cpu" in str(info.value)
    assert DenseIndex(np.arange(50), vecs).exact, "below the threshold no graph, so faiss is not needed"


@pytest.mark.parametrize("exact_below", [None, 0])
def test_a_numpy_integer_k_is_served_like_an_int(exact_below: int | None) -> None:
    """The scan took np.int64(5); the graph passed it to faiss's SWIG binding, which refused it with a page of C++
    prototypes ('Wrong number or type of arguments for overloaded function'). A float k is a TypeError in both."""
    vecs, queries = _clustered(50)
    index = DenseIndex(np.arange(50), vecs, exact_below=exact_below)
    got = index.nearest(queries[0], np.int64(5))  # pyright: ignore[reportArgumentType]
    assert got.tolist() == index.nearest(queries[0], 5).tolist()
    with pytest.raises(TypeError, match="integer"):
        index.nearest(queries[0], 5.0)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("exact_below", [None, 0])
def test_a_query_with_nan_is_an_error_not_arbitrary_rows(exact_below: int | None) -> None:
    """A NaN in the query made every similarity NaN: the scan returned k arbitrary rows as the nearest, the graph
    none, and neither said why."""
    vecs, queries = _clustered(50)
    index = DenseIndex(np.arange(50), vecs, exact_below=exact_below)
    for bad in (np.nan, np.inf):
        q = queries[0].copy()
        q[3] = bad
        with pytest.raises(ValueError, match="not finite"):
            index.nearest(q, 5)


@pytest.mark.parametrize("exact_below", [None, 0])
def test_vectors_must_be_a_matrix_and_rows_a_list(exact_below: int | None) -> None:
    """One 8-dimension vector given as (8,) for 8 rows passed the count check, then `nearest` failed with numpy's
    'invalid index to scalar variable' (scan) or the build with 'tuple index out of range' (graph)."""
    with pytest.raises(ValueError, match=r"vectors of shape \(8,\)"):
        DenseIndex(np.arange(8), np.ones(8, dtype=np.float32), exact_below=exact_below)
    with pytest.raises(ValueError, match=r"rows of shape \(8, 1\)"):
        DenseIndex(np.arange(8).reshape(8, 1), np.ones((8, 4), dtype=np.float32), exact_below=exact_below)
    empty = DenseIndex(np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32), exact_below=exact_below)
    assert empty.nearest(np.ones(4), 3).tolist() == [], "no documents: no candidates, with or without a graph"
