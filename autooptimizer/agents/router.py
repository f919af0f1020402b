"""The offline router: which agent takes a goal first (metrics | data | ml | devops), or `clarify` when the goal is
off-topic or too vague to act on. It is trusted: `agents/intent.py` bounds a run's tools by its answer.

Method: a multinomial logistic regression over TF-IDF word 1-2-grams and character 2-5-grams (scikit-learn),
trained on the paraphrases `router_training.yaml` expands (templates over verbs, objects, units and synonyms from
the tool catalogue and the docs) plus the hand-written goals of `router_examples.yaml`. A goal whose best agent
probability is below `MIN_CONFIDENCE`, or that shares no word with the training goals, gets `clarify`: when unsure,
no change route. `MIN_CONFIDENCE` is calibrated on a template-held-out split of the training data
(`calibrate()`, `autoopt bench router --calibrate`), never on an evaluation set.

The model is fitted in-process on first use (about a second, deterministic: fixed data, fixed solver), so no pickled
artifact can go stale across scikit-learn versions. `router_eval.yaml` is the own evaluation set; any labelled goals
file can be scored with `autoopt bench router --goals FILE`.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from autooptimizer.errors import ConfigError

HERE = Path(__file__).parent
AGENT_LABELS: tuple[str, ...] = ("metrics", "data", "ml", "devops")
CLARIFY = "clarify"
LABELS: tuple[str, ...] = (*AGENT_LABELS, CLARIFY)
# Below this best-agent probability a goal is not routed (calibrate(): template-held-out split of the training data).
MIN_CONFIDENCE = 0.4
_C = 10.0  # inverse L2 strength of the logistic regression (chosen with calibrate() on the same split)


class Route(BaseModel):
    """Where a goal goes and how sure the router is (class probabilities of the classifier)."""

    agent: str
    confidence: float
    scores: dict[str, float]


class LabelledGoal(BaseModel):
    goal: str
    label: str


class EvalResult(BaseModel):
    total: int
    correct: int
    accuracy: float
    p50_ms: float
    p95_ms: float
    errors: list[dict]
    labels: list[str] = list(LABELS)
    confusion: dict[str, dict[str, int]] = {}  # expected label -> predicted label -> count


def load_examples(path: Path | None = None) -> dict[str, list[str]]:
    """The hand-written goals per label (router_examples.yaml), part of the training data."""
    data = yaml.safe_load((path or HERE / "router_examples.yaml").read_text())
    bad = set(data) - set(LABELS)
    if bad:
        raise ConfigError(f"Unknown router labels {sorted(bad)}.", f"Use {LABELS}.")
    return {k: [str(x) for x in v] for k, v in data.items()}


def load_goals(path: Path) -> list[dict]:
    """A labelled goals file: a YAML list of {goal, label} (label one of LABELS; `route` is read as the label), or a
    mapping whose `goals` is that list. Raises ConfigError naming the first bad entry."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"Cannot read the goals file {path}: {e}.", "Give a YAML list of {goal, label}.") from e
    if isinstance(raw, dict) and isinstance(raw.get("goals"), list):
        raw = raw["goals"]  # {labels: [...], goals: [{goal, route, note}]} as well
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"The goals file {path} is not a non-empty YAML list.", "Give a list of {goal, label}.")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, dict) and "label" not in item and "route" in item:
            item = {"goal": item.get("goal"), "label": item["route"]}
        try:
            entry = LabelledGoal.model_validate(item)
        except ValidationError as e:
            raise ConfigError(f"Entry {i} of {path} is not {{goal, label}}: {item!r}.",
                              "Give each entry a `goal` string and a `label`.") from e
        if entry.label not in LABELS:
            raise ConfigError(f"Entry {i} of {path} has the unknown label {entry.label!r}.", f"Use one of {LABELS}.")
        out.append(entry.model_dump())
    return out


def load_eval_set(path: Path | None = None) -> list[dict]:
    """The own evaluation set (router_eval.yaml): never used for training or calibration."""
    return load_goals(path or HERE / "router_eval.yaml")


# --- training data ----------------------------------------------------------------------------------------------
_SLOT = re.compile(r"\{([A-Z_]+)\}")


def _expand(template: str, slots: dict[str, list[str]], cap: int, seed: int) -> list[str]:
    """Every filling of `template`'s slots, or a seeded sample of `cap` of them when there are more."""
    names = _SLOT.findall(template)
    missing = [n for n in names if n not in slots]
    if missing:
        raise ConfigError(f"Router template {template!r} uses undefined slots {missing}.",
                          "Define them under `slots:` in router_training.yaml.")
    pools = [slots[n] for n in names]
    total = 1
    for pool in pools:
        total *= len(pool)
    rng = random.Random(seed)
    if total <= cap:
        combos: list[tuple[str, ...]] = list(itertools.product(*pools))
    else:
        combos = [tuple(rng.choice(pool) for pool in pools) for _ in range(cap)]
    out = []
    for combo in combos:
        text = _SLOT.sub(lambda _m, it=iter(combo): next(it), template)
        out.append(re.sub(r"\s+", " ", text).strip(" ,"))
    return out


def training_goals(path: Path | None = None, examples: Path | None = None) -> list[tuple[str, str, str]]:
    """(goal, label, group) for training: the expanded templates (group = label/intent/template index) and the
    hand-written examples (group = label/examples/index), deduplicated, in a fixed order."""
    raw = yaml.safe_load((path or HERE / "router_training.yaml").read_text())
    slots = {k: [str(v) for v in vs] for k, vs in raw["slots"].items()}
    cap = int(raw.get("per_template", 48))
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    for label, groups in raw["templates"].items():
        if label not in LABELS:
            raise ConfigError(f"Unknown router label {label!r} in router_training.yaml.", f"Use one of {LABELS}.")
        for group, templates in groups.items():
            for i, template in enumerate(templates):
                for text in _expand(template, slots, cap, seed=hash_seed(f"{label}/{group}/{i}")):
                    if text.lower() not in seen:
                        seen.add(text.lower())
                        out.append((text, label, f"{label}/{group}/{i}"))
    for label, texts in load_examples(examples).items():
        for j, text in enumerate(texts):
            if text.lower() not in seen:
                seen.add(text.lower())
                out.append((text, label, f"{label}/examples/{j}"))
    return out


def hash_seed(text: str) -> int:
    """A seed that is the same in every process (str hash is salted per process)."""
    import zlib

    return zlib.crc32(text.encode())


# --- the classifier -----------------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z][a-z0-9_@/-]*[a-z0-9]|[a-z]")


def prepare(text: str) -> str:
    """What the classifier reads: normalized (intent.normalize), lower case, hyphens between letters as spaces,
    every number one `0` (units and counts generalize: 800 ms ~ 1200 ms)."""
    from autooptimizer.agents.intent import normalize

    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", normalize(text).lower())  # roll-back = roll back
    return re.sub(r"\d+(?:[.,]\d+)?", "0", text)[:2000]


def _pipeline(c: float = _C) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    features = FeatureUnion([
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                  token_pattern=_WORD.pattern)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ])
    return make_pipeline(features, LogisticRegression(C=c, max_iter=2000, class_weight="balanced"))


def domain_words(texts: list[str], labels: list[str]) -> frozenset[str]:
    """Words of the agents' training goals that no off-topic (clarify) goal uses and that are not English stop
    words: the product's vocabulary (ndcg, rollback, replicas, shap, ...). A goal with none of them is off-topic."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    agent, other = set(), set()
    for text, label in zip(texts, labels, strict=True):
        (other if label == CLARIFY else agent).update(_WORD.findall(text))
    return frozenset(agent - other - ENGLISH_STOP_WORDS)


class ClassifierRouter:
    """Logistic regression over word and character n-grams; `clarify` below `min_confidence` (see module doc)."""

    def __init__(self, goals: list[tuple[str, str, str]] | None = None, min_confidence: float = MIN_CONFIDENCE,
                 c: float = _C) -> None:
        self._goals = goals
        self.min_confidence = min_confidence
        self.c = c
        self._model: Any = None
        self._vocab: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def _ensure(self) -> Any:
        with self._lock:
            if self._model is None:
                goals = self._goals if self._goals is not None else training_goals()
                texts = [prepare(g) for g, _, _ in goals]
                model = _pipeline(self.c)
                from threadpoolctl import threadpool_limits

                with threadpool_limits(limits=1):  # BLAS threads only contend on so small a fit
                    model.fit(texts, [label for _, label, _ in goals])
                self._vocab = domain_words(texts, [label for _, label, _ in goals])
                self._model = model
            return self._model

    def probabilities(self, goals: list[str]) -> list[dict[str, float]]:
        model = self._ensure()
        probs = model.predict_proba([prepare(g) for g in goals])
        return [{str(k): float(p) for k, p in zip(model.classes_, row, strict=True)} for row in probs]

    def decide(self, goal: str, probs: dict[str, float]) -> Route:
        """The route for `goal` given its class probabilities: the best agent, unless clarify is likelier, the best
        agent is below min_confidence, or no word of the goal occurs in the agents' training goals."""
        scores = {k: round(v, 4) for k, v in probs.items()}
        best = max(AGENT_LABELS, key=lambda k: probs.get(k, 0.0))
        known = any(w in self._vocab for w in _WORD.findall(prepare(goal)))  # a word only the agents' goals use
        if probs.get(CLARIFY, 0.0) >= probs[best] or probs[best] < self.min_confidence or not known:
            return Route(agent=CLARIFY, confidence=round(1.0 - probs[best], 4), scores=scores)
        return Route(agent=best, confidence=round(probs[best], 4), scores=scores)

    def route(self, goal: str) -> Route:
        goal = (goal or "").strip()
        if not goal:
            return Route(agent=CLARIFY, confidence=1.0, scores={})
        return self.decide(goal, self.probabilities([goal])[0])

    def evaluate(self, items: list[dict] | None = None) -> EvalResult:
        """Accuracy, per-goal latency, the misses and the confusion matrix on labelled goals (default: the own
        evaluation set)."""
        items = items if items is not None else load_eval_set()
        self.route("warm up")
        times, errors, correct = [], [], 0
        confusion: dict[str, dict[str, int]] = {e: {g: 0 for g in LABELS} for e in LABELS}
        for item in items:
            t0 = time.perf_counter()
            got = self.route(item["goal"])
            times.append((time.perf_counter() - t0) * 1000)
            confusion[item["label"]][got.agent] += 1
            if got.agent == item["label"]:
                correct += 1
            else:
                errors.append({"goal": item["goal"], "expected": item["label"], "got": got.agent,
                               "confidence": got.confidence})
        times.sort()
        return EvalResult(total=len(items), correct=correct, accuracy=correct / max(1, len(items)),
                          p50_ms=round(times[len(times) // 2], 2),
                          p95_ms=round(times[max(0, int(len(times) * 0.95) - 1)], 2),
                          errors=errors, confusion=confusion)


def calibrate(goals: list[tuple[str, str, str]] | None = None, folds: int = 5) -> dict[str, Any]:
    """Choose `C` and `MIN_CONFIDENCE` on the training data alone: grouped k-fold over templates (all paraphrases
    of a template sit in one fold, so a fold is scored on wordings it never saw). Per (C, threshold) it reports the
    accuracy and the wrong-agent rate (an agent other than the label: a guessed change route); the pick maximises
    accuracy minus the wrong-agent rate, so a wrong route costs twice a needless clarify (ties: higher threshold)."""
    goals = goals if goals is not None else training_goals()
    fold_of = [hash_seed(group) % folds for _, _, group in goals]
    thresholds = [round(0.05 * t, 2) for t in range(3, 15)]
    grid: dict[str, dict[str, dict[str, float]]] = {}
    for c in (3.0, 10.0, 30.0, 100.0):
        hits, wrong = dict.fromkeys(thresholds, 0), dict.fromkeys(thresholds, 0)
        for f in range(folds):
            train = [g for g, k in zip(goals, fold_of, strict=True) if k != f]
            dev = [g for g, k in zip(goals, fold_of, strict=True) if k == f]
            router = ClassifierRouter(train, c=c)
            probs = router.probabilities([g for g, _, _ in dev])
            for t in thresholds:
                router.min_confidence = t
                for (goal, label, _), p in zip(dev, probs, strict=True):
                    got = router.decide(goal, p).agent
                    hits[t] += got == label
                    wrong[t] += got not in (label, CLARIFY)
        grid[str(c)] = {str(t): {"accuracy": round(hits[t] / len(goals), 4),
                                 "wrong_agent": round(wrong[t] / len(goals), 4)} for t in thresholds}
    best = max(((float(c), float(t), m) for c, row in grid.items() for t, m in row.items()),
               key=lambda x: (round(x[2]["accuracy"] - x[2]["wrong_agent"], 4), x[1]))
    return {"goals": len(goals), "folds": folds, "grid": grid,
            "best": {"c": best[0], "min_confidence": best[1], **best[2]}}


@lru_cache(maxsize=1)
def get_router() -> ClassifierRouter:
    return ClassifierRouter()
