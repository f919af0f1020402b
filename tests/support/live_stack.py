"""Helpers for fast integration tests of the gates and the local stack (other areas' tests may reuse them).

- `write_test_profile(dir)`: a `dev.yaml` with 5 s / 10 s gate windows (and minimum samples to match); point
  AUTOOPT_PROFILES_DIR at `dir`.
- `write_shift_datasets(root)`: two tiny BEIR folders, `good` (BM25 serves them well) and `bad` (judged on another
  topic, so served NDCG@10 is low): shifting the simulator from one to the other fires the NDCG gate in seconds.
- `wait_gate(...)`: poll a gate until it reads a status.
"""

from __future__ import annotations

import time
from pathlib import Path

from autooptimizer.gates import Gate, evaluate_gates
from autooptimizer.profiles import Profile

# Minimum samples scaled to the short windows: the tests replay at 20 req/s, so a 5 s window holds ~100 requests and
# feedback; a third of that is still plenty for the tiny data's steady NDCG.
TEST_PROFILE = """\
name: {name}
gates: {{ndcgDropPct: 3.0, p95LatencyMs: 800, costBudgetPct: 80.0, maxRetries: 3, windowSeconds: {window},
        baselineWindowSeconds: {baseline}, minSamples: {{ndcgDrop: 30, p95Latency: 20, costBudget: 10, retries: 10}},
        consecutiveReadings: 2, readIntervalSeconds: 1}}
cost: {{pricePerComputeSecond: 0.0005, budget: 5.0}}
"""
TOPICS = ["heart", "brain", "wing", "soil", "ocean", "virus"]


def write_test_profile(root: Path, name: str = "dev", window: int = 5, baseline: int = 10) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.yaml").write_text(TEST_PROFILE.format(name=name, window=window, baseline=baseline))
    return root


def write_shift_datasets(root: Path) -> tuple[Path, Path]:
    """`good`: queries judged on their own topic. `bad`: the same texts judged on another topic."""
    from autooptimizer.search.sample_data import write_tiny_beir

    good = write_tiny_beir(root / "good")
    bad = write_tiny_beir(root / "bad")
    rows = (bad / "qrels.tsv").read_text().splitlines()
    shifted = [rows[0]]
    for row in rows[1:]:
        qid, doc, grade = row.split("\t")
        topic = qid.removeprefix("q-")
        other = TOPICS[(TOPICS.index(topic) + 3) % len(TOPICS)]
        shifted.append(f"{qid}\t{doc.replace(topic, other)}\t{grade}")
    (bad / "qrels.tsv").write_text("\n".join(shifted) + "\n")
    return good, bad


def wait_gate(url: str, profile: Profile, name: str, status: str, timeout: float = 40.0) -> tuple[Gate, float]:
    """Poll every 0.5 s until gate `name` reads `status`; returns the gate and the seconds it took."""
    t0 = time.monotonic()
    gate = None
    while time.monotonic() - t0 < timeout:
        gate = evaluate_gates(prometheus_url=url, profile=profile).gate(name)
        if gate.status == status:
            return gate, time.monotonic() - t0
        time.sleep(0.5)
    last = gate.model_dump_json() if gate else None
    raise AssertionError(f"gate {name} not {status} within {timeout}s; last: {last}")
