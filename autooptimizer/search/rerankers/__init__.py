"""Rerankers, pluggable by `kind`.

A kind lives in `autooptimizer/search/rerankers/<kind>.py` and registers a factory with `@register("<kind>")`.
`build_reranker(spec, collection)` imports that module on first use, so a new kind needs no edit here.

Interface: `Reranker.score(query, doc_ids, bm25_scores) -> np.ndarray` (higher is better, one score per doc id;
doc ids are collection ids "<dataset>/<docid>"). `warm()` does any one-time work (e.g. embedding the corpus).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from autooptimizer.errors import NotFoundError

if TYPE_CHECKING:
    from autooptimizer.search.beir import Collection
    from autooptimizer.search.model_store import ModelSpec


@runtime_checkable
class Reranker(Protocol):
    kind: str

    def warm(self, progress: bool = True) -> None: ...

    def score(self, query: str, doc_ids: list[str], bm25_scores: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class BatchReranker(Protocol):
    """A reranker that also scores many queries in one call (offline evaluation batches the query encoding)."""

    def score_many(self, queries: list[str], doc_ids: list[list[str]]) -> list[np.ndarray]: ...


Factory = Callable[["ModelSpec", "Collection"], Reranker]
_REGISTRY: dict[str, Factory] = {}


def register(kind: str) -> Callable[[Factory], Factory]:
    """Decorator: `@register("cross_encoder") def build(spec, collection) -> Reranker`."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY[kind] = factory
        return factory

    return deco


def get_factory(kind: str) -> Factory:
    if kind not in _REGISTRY and re.fullmatch(r"[a-z][a-z0-9_]*", kind or ""):
        try:
            importlib.import_module(f"{__name__}.{kind}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{kind}":
                raise
    if kind not in _REGISTRY:
        raise NotFoundError(
            f"Unknown reranker kind {kind!r}.",
            f"Use one of {sorted(set(_REGISTRY) | {'bi_encoder', 'cross_encoder', 'bm25'})} "
            f"or add autooptimizer/search/rerankers/{kind}.py that calls register({kind!r}).",
        )
    return _REGISTRY[kind]


def build_reranker(spec: ModelSpec, collection: Collection) -> Reranker:
    return get_factory(spec.kind)(spec, collection)


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)
