"""A tiny BEIR-format dataset written on demand, for tests and smoke runs that must not need the shared datasets.

Each topic has a few documents that share its vocabulary; each query asks about one topic and its qrels mark that
topic's documents relevant (the first one with grade 2). Deterministic: same arguments, same files.
"""

from __future__ import annotations

import json
from pathlib import Path

TOPICS: dict[str, list[str]] = {
    "heart": ["cardiac arrest", "heart failure", "blood pressure", "coronary artery", "statin therapy"],
    "brain": ["neurons", "cortex", "memory formation", "synaptic plasticity", "dopamine signalling"],
    "wing": ["aerofoil lift", "wing flutter", "supersonic flow", "boundary layer", "shock wave drag"],
    "soil": ["crop yield", "nitrogen fertiliser", "soil erosion", "irrigation", "root growth"],
    "ocean": ["coral reef", "sea temperature", "plankton bloom", "ocean acidification", "fish stocks"],
    "virus": ["viral replication", "vaccine response", "antibody titre", "influenza strain", "immune escape"],
}
QUERIES: dict[str, str] = {
    "heart": "treatment of heart failure and blood pressure",
    "brain": "how do neurons support memory formation",
    "wing": "wing flutter in supersonic flow",
    "soil": "nitrogen fertiliser effect on crop yield",
    "ocean": "ocean acidification damages coral reef",
    "virus": "vaccine antibody response to influenza strain",
}


def write_tiny_beir(root: str | Path, docs_per_topic: int = 5, topics: list[str] | None = None,
                    with_split: bool = False) -> Path:
    """Write corpus.jsonl, queries.jsonl and qrels (qrels.tsv, or qrels/train.tsv + qrels/test.tsv with_split)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = topics or list(TOPICS)
    corpus, queries, qrels = [], [], []
    for t, topic in enumerate(names):
        phrases = TOPICS[topic]
        for i in range(docs_per_topic):
            a, b = phrases[i % len(phrases)], phrases[(i + 2) % len(phrases)]
            corpus.append({"_id": f"{topic}{i}", "title": f"Study {i} on {a}",
                           "text": f"This paper reports findings on {a} and {b}, a {topic} research question."})
        split = "test" if t % 2 else "train"
        queries.append({"_id": f"q-{topic}", "text": QUERIES[topic], **({"split": split} if with_split else {})})
        qrels += [(f"q-{topic}", f"{topic}{i}", 2 if i == 0 else 1, split) for i in range(docs_per_topic)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    header = "query-id\tcorpus-id\tscore\n"
    if with_split:
        (root / "qrels").mkdir(exist_ok=True)
        for split in ("train", "test"):
            rows = "".join(f"{q}\t{d}\t{g}\n" for q, d, g, s in qrels if s == split)
            (root / "qrels" / f"{split}.tsv").write_text(header + rows)
    else:
        (root / "qrels.tsv").write_text(header + "".join(f"{q}\t{d}\t{g}\n" for q, d, g, _ in qrels))
    return root


AERO_TOPICS: dict[str, str] = {
    "flutter": "wing flutter aeroelastic vibration panel",
    "shock": "shock wave supersonic compression ramp",
    "heat": "heat transfer boundary layer stagnation point",
    "buckling": "buckling cylindrical shell axial load",
    "jet": "jet noise turbulent mixing nozzle",
    "hypersonic": "hypersonic viscous interaction leading edge",
    "creep": "creep stress rupture high temperature alloy",
    "slip": "slip flow rarefied gas knudsen",
    "delta": "delta wing vortex lift slender",
    "plate": "plate vibration natural frequency clamped",
}


def write_tiny_domain(root: str | Path, n_topics: int = 10) -> Path:
    """A tiny aeronautics-like NEW domain (a stand-in for cran): `n_topics` x 4 docs, 2 judged queries per topic,
    graded qrels.tsv (grade 2 for the doc the query paraphrases, 1 for its topic's others)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for t, (topic, words) in enumerate(list(AERO_TOPICS.items())[:n_topics]):
        w = words.split()
        for i in range(4):
            corpus.append({"_id": f"{topic}{i}", "title": f"{w[i % 5]} {w[(i + 1) % 5]} study",
                           "text": f"measurements of {' '.join(w[i:] + w[:i])} in a {topic} experiment number {i}"})
        for j in range(2):
            qid = str(2 * t + j + 1)
            queries.append({"_id": qid, "text": f"what is known about {w[j]} {w[j + 2]} and {w[4 - j]}"})
            qrels += [(qid, f"{topic}{i}", 2 if i == j else 1) for i in range(4)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels))
    return root


def write_tiny_original(root: str | Path) -> Path:
    """The tiny ORIGINAL domain for the new one above (the sample topics but the aeronautics one) with 3 train and
    1 test query per topic, so a domain gate has a realistic reference set to learn from."""
    root = Path(root)
    topics = [t for t in TOPICS if t != "wing"]
    write_tiny_beir(root, topics=topics, with_split=True)
    queries, qrels = [], {"train": [], "test": []}
    for topic in topics:
        phrases = TOPICS[topic]
        forms = [QUERIES[topic], f"does {phrases[1]} change {phrases[3]}", f"{phrases[2]} and {phrases[4]} evidence",
                 f"clinical role of {phrases[0]} for {phrases[2]}"]
        for j, text in enumerate(forms):
            split = "test" if j == 3 else "train"
            queries.append({"_id": f"q-{topic}-{j}", "text": text, "split": split})
            qrels[split] += [(f"q-{topic}-{j}", f"{topic}{i}", 2 if i == j % 5 else 1) for i in range(5)]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    return root
