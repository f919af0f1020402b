"""Model versions are immutable directories; aliases live in one file; reranker kinds plug in by name."""

from __future__ import annotations

import numpy as np
import pytest
from support.weights import weights_folder

from autooptimizer.errors import InputError, NotFoundError
from autooptimizer.search import aliases, model_store
from autooptimizer.search.model_store import ModelSpec
from autooptimizer.search.rerankers import build_reranker, get_factory, register, registered_kinds


def test_save_load_list(autoopt_home):
    a = ModelSpec(version="v1-a", fusion_weight=0.6, notes="first")
    b = ModelSpec(version="v2-b", kind="cross_encoder", fusion_weight=0.3, parent="v1-a", params={"max_length": 128})
    model_store.save(a)
    model_store.save(b, extra={"eval.json": {"ndcg10": 0.72}})
    assert model_store.exists("v1-a") and not model_store.exists("v9")
    assert model_store.load("v2-b") == b
    assert set(model_store.list_versions()) == {"v1-a", "v2-b"}
    assert model_store.read_extra("v2-b", "eval.json") == {"ndcg10": 0.72}
    assert (autoopt_home / "models" / "v1-a" / "model.json").is_file()
    with pytest.raises(NotFoundError, match="v9"):
        model_store.load("v9")


def test_versions_are_immutable():
    spec = ModelSpec(version="v1-x", fusion_weight=0.5)
    model_store.save(spec)
    model_store.save(spec.model_copy(update={"notes": "same content, new note"}))  # no-op
    with pytest.raises(InputError, match="immutable"):
        model_store.save(spec.model_copy(update={"fusion_weight": 0.7}))
    assert model_store.load("v1-x").fusion_weight == 0.5


def test_weights_copied_and_resolved(tmp_path):
    w = tmp_path / "trained"
    w.mkdir()
    (w / "config.json").write_text("{}")
    target = model_store.save(ModelSpec(version="v3-ft", fusion_weight=0.5), weights_dir=w)
    spec = model_store.load("v3-ft")
    assert spec.encoder_path == "weights"
    assert spec.resolved_encoder_path() == str(target / "weights")
    assert (target / "weights" / "config.json").is_file()


def test_identical_weights_are_stored_once_and_outlive_the_other_version(autoopt_home, tmp_path):
    import shutil

    same, parent_only, child_only = b"reference" * 1000, b"expert-A" * 500, b"expert-B" * 500
    model_store.save(ModelSpec(version="v1-p"), weights_dir=weights_folder(tmp_path / "p", {
        "reference.npz": same, "experts/x.npz": parent_only}))
    model_store.save(ModelSpec(version="v2-c", parent="v1-p"), weights_dir=weights_folder(tmp_path / "c", {
        "reference.npz": same, "experts/x.npz": child_only, "copy_of_reference.npz": same}))
    p, c = (model_store.version_dir(v) / "weights" for v in ("v1-p", "v2-c"))
    assert (p / "reference.npz").stat().st_ino == (c / "reference.npz").stat().st_ino  # one copy on disk
    assert (c / "reference.npz").stat().st_nlink == 2
    assert (p / "experts/x.npz").stat().st_ino != (c / "experts/x.npz").stat().st_ino  # same path, other bytes
    assert (c / "copy_of_reference.npz").stat().st_nlink == 1  # same bytes at another path: its own copy
    assert not list(c.rglob(".*"))  # no link temp left behind
    shutil.rmtree(model_store.version_dir("v1-p"))
    assert (c / "reference.npz").read_bytes() == same and (c / "experts/x.npz").read_bytes() == child_only
    assert (c / "reference.npz").stat().st_nlink == 1


def test_a_refused_link_keeps_the_copy(autoopt_home, tmp_path, monkeypatch):
    """A file system without hard links (or across devices): the save succeeds with its own copy."""
    import os

    model_store.save(ModelSpec(version="v1-p"),

                     weights_dir=weights_folder(tmp_path / "p", {"reference.npz": b"r" * 900}))

    def refuse(*_a, **_k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    model_store.save(ModelSpec(version="v2-c"),
                     weights_dir=weights_folder(tmp_path / "c", {"reference.npz": b"r" * 900}))
    c = model_store.version_dir("v2-c") / "weights"
    assert (c / "reference.npz").read_bytes() == b"r" * 900 and (c / "reference.npz").stat().st_nlink == 1
    assert [p.name for p in c.iterdir()] == ["reference.npz"]  # no link temp left behind


def test_another_versions_unreadable_file_never_fails_a_save(autoopt_home, tmp_path, monkeypatch):
    """Sharing is only a saving: another version's file that cannot be read (another owner's 0600 file, an I/O
    error; root reads anything, so the read error is injected) leaves this save's copy and the save succeeds."""
    import filecmp

    model_store.save(ModelSpec(version="v1-p"),

                     weights_dir=weights_folder(tmp_path / "p", {"reference.npz": b"r" * 900}))
    real = filecmp.cmp

    def unreadable_other(a, b, shallow=True):
        if "v1-p" in str(a) or "v1-p" in str(b):
            raise PermissionError(13, "Permission denied", str(a))
        return real(a, b, shallow)

    monkeypatch.setattr(filecmp, "cmp", unreadable_other)
    model_store.save(ModelSpec(version="v2-c"),
                     weights_dir=weights_folder(tmp_path / "c", {"reference.npz": b"r" * 900}))
    c = model_store.version_dir("v2-c") / "weights" / "reference.npz"
    assert c.read_bytes() == b"r" * 900 and c.stat().st_nlink == 1


def test_bad_version_names():
    for bad in ("", "../x", "a b", "x/y"):
        with pytest.raises((InputError, ValueError)):
            ModelSpec(version=bad)
    assert model_store.content_version("v1", {"a": 1}) == model_store.content_version("v1", {"a": 1})
    assert model_store.content_version("v1", {"a": 1}) != model_store.content_version("v1", {"a": 2})


def test_aliases_file():
    assert aliases.get_alias("champion") is None
    with pytest.raises(NotFoundError, match="bootstrap"):
        aliases.require_alias("champion")
    aliases.set_alias("champion", "v1-a")
    assert aliases.set_alias("champion", "v2-b", only_if_missing=True) == "v1-a"
    aliases.set_alias("gold", "v1-a")
    aliases.set_alias("champion", "v2-b")
    assert aliases.all_aliases() == {"champion": "v2-b", "gold": "v1-a"}


def test_reranker_registry_plugins(tmp_path):
    with pytest.raises(NotFoundError, match="no_such_kind"):
        get_factory("no_such_kind")

    class Constant:
        kind = "constant_test"

        def warm(self, progress=True):
            return None

        def score(self, query, doc_ids, bm25_scores):
            return np.ones(len(doc_ids))

    register("constant_test")(lambda spec, collection: Constant())
    assert "constant_test" in registered_kinds()
    r = build_reranker(ModelSpec(version="v-c", kind="constant_test"), collection=None)
    assert r.score("q", ["a", "b"], np.zeros(2)).tolist() == [1.0, 1.0]
    assert get_factory("bm25") and get_factory("bi_encoder") and get_factory("cross_encoder")
