"""Query augmentation with nlpaug, offline: keyboard and OCR noise, random word swap/delete, spelling errors, and
WordNet synonyms only when the WordNet data is installed (nltk + wordnet corpus; absent here by default).

Applied to the weak slice: the dataset's queries the service served worst (lowest served nDCG@10). Each output line
names its method and its source row, and the same seed gives byte-identical output, in any process (every line
reseeds Python's and NumPy's RNGs from (seed, line), and candidate lists are sorted, not in hash order).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import random
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from autooptimizer.errors import InputError

DEFAULT_MIX = ("keyboard", "ocr", "word_swap", "word_delete", "spelling")
ALL_METHODS = (*DEFAULT_MIX, "synonym")
CSV_FIELDS = ["row", "method", "source_row", "query_key", "original", "augmented", "seed"]


class AugmentReport(BaseModel):
    path: str
    rows: int
    methods: dict[str, int]
    weak_queries: int
    seed: int
    skipped_methods: dict[str, str]
    sha256: str

    def recipe(self) -> dict:
        return {"methods": self.methods, "rows": self.rows, "seed": self.seed, "weak_queries": self.weak_queries}


def wordnet_available() -> bool:
    try:
        # imported by name: nltk is optional (only the synonym method needs it) and may not be installed
        wordnet = importlib.import_module("nltk.corpus").wordnet
        wordnet.synsets("test")
        return True
    except Exception:  # noqa: BLE001 - any failure means the data is not usable offline
        return False


def make_augmenter(method: str):
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw

    if method == "keyboard":
        return nac.KeyboardAug(aug_char_max=2, aug_word_p=0.2)
    if method == "ocr":
        return nac.OcrAug(aug_char_max=2, aug_word_p=0.2)
    if method == "word_swap":
        return naw.RandomWordAug(action="swap", aug_p=0.2)
    if method == "word_delete":
        return naw.RandomWordAug(action="delete", aug_p=0.15)
    if method == "spelling":
        aug = naw.SpellingAug(aug_p=0.2)
        # nlpaug dedups misspellings with list(set(...)): order (and so output) would follow PYTHONHASHSEED
        model: Any = aug.model  # nlpaug is untyped; its SpellingAug model holds the misspellings in `.dict`
        model.dict = {k: sorted(v) for k, v in model.dict.items()}
        return aug
    if method == "synonym":
        return naw.SynonymAug(aug_src="wordnet", aug_p=0.2)
    raise InputError(f"Unknown augmentation method {method!r}.", f"Use some of {', '.join(ALL_METHODS)}.")


def weak_slice(queries, fraction: float = 0.5) -> list:
    """The `fraction` of original queries with the lowest served nDCG@10 (unknown nDCG counts as weak)."""
    originals = [q for q in queries if q.augmented_from is None]
    ranked = sorted(originals, key=lambda q: (q.served_ndcg10 if q.served_ndcg10 is not None else -1, q.query_key))
    return ranked[: max(1, int(round(fraction * len(ranked))))] if ranked else []


def augment_dataset(dataset_ref: str, out_csv: str | Path, size: int = 200, mix: list[str] | None = None,
                    seed: int = 0, weak_fraction: float = 0.5) -> AugmentReport:
    """Write `size` augmented queries of the weak slice to `out_csv`, methods taken round-robin from `mix`."""
    from autooptimizer.ml.dataset import load_dataset

    if size < 1:
        raise InputError(f"size={size} must be at least 1.", "Ask for one or more augmented rows.")
    if not 0 < weak_fraction <= 1:
        raise InputError(f"weak_fraction={weak_fraction} is outside (0, 1].", "Use e.g. 0.5 for the worse half.")
    if mix is not None and not mix:  # an empty --mix is a mistake, not a request for the defaults
        raise InputError("No augmentation method named (an empty mix).", f"Name some of {', '.join(DEFAULT_MIX)}, "
                         "or leave the mix out for all of them.")
    ds = load_dataset(dataset_ref)
    methods = list(mix if mix is not None else DEFAULT_MIX)
    skipped: dict[str, str] = {}
    if "synonym" in methods and not wordnet_available():
        methods.remove("synonym")
        skipped["synonym"] = "WordNet data not installed (pip install nltk and the wordnet corpus)"
    if not methods:
        raise InputError("No augmentation method is available.", f"Use some of {', '.join(DEFAULT_MIX)}.")
    augmenters = {m: make_augmenter(m) for m in methods}
    weak = weak_slice(ds.queries, weak_fraction)
    row_of = {q.query_key: i for i, q in enumerate(ds.queries)}
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(methods, 0)
    with out.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for i in range(size):
            src = weak[i % len(weak)]
            method = methods[(i // len(weak) + i) % len(methods)]
            line_seed = int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big")
            random.seed(line_seed)
            np.random.seed(line_seed)
            res = augmenters[method].augment(src.text)
            text = (res[0] if isinstance(res, list) else res) or src.text
            counts[method] += 1
            w.writerow({"row": i, "method": method, "source_row": row_of[src.query_key], "query_key": src.query_key,
                        "original": src.text, "augmented": text, "seed": seed})
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return AugmentReport(path=str(out), rows=size, methods=counts, weak_queries=len(weak), seed=seed,
                         skipped_methods=skipped, sha256=digest)
