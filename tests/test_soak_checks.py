"""The soak's end-of-run read of repaired domains: from the forgetting guard's durable record, never from cycle
artifacts retention may have pruned; promotions without a readable record fail the check."""

from __future__ import annotations

from types import SimpleNamespace

from autooptimizer.ml import forgetting as fg
from autooptimizer.soak.checks import offline, promoted_evaluations
from autooptimizer.soak.report import _domains_check
from autooptimizer.soak.scenario import Scenario

SC = Scenario(name="t", schedule_every=10, original="scifact",
              phases=[{"name": "p", "duration": 16, "rate": 1, "mix": "scifact"}])


def _promote(version: str, cycle: str, scores: dict[str, float]) -> None:
    rows = [{"set": k, "challenger": v, "hash": "h"} for k, v in scores.items()]
    fg.record_promotion({"rows": rows}, version, cycle)


def test_the_record_gives_each_repaired_domain_its_best_promoted_value_and_set() -> None:
    fg.fix_set("scifact", "scifact", ["1", "2"], split="test")
    fg.fix_set("cran", "cran", ["5", "3", "4"], cycle_id="c1")
    fg.fix_set("cisi", "cisi", ["7"], cycle_id="c2")
    _promote("ltr-a", "c1", {"cran": 0.48, "scifact:test": 0.72})
    _promote("ltr-b", "c2", {"cran": 0.47, "cisi": 0.51})  # cran lower this time: the best stays 0.48
    rows = promoted_evaluations("scifact")
    assert set(rows) == {"cran", "cisi"}  # the original domain's set is the other invariant's
    assert (rows["cran"]["best_promoted"], rows["cran"]["version"], rows["cran"]["qids"]) == (0.48, "ltr-a",
                                                                                             ["3", "4", "5"])
    assert (rows["cisi"]["best_promoted"], rows["cisi"]["cycle"], rows["cisi"]["data"]) == (0.51, "c2", "cisi")


def test_promotions_without_a_record_fail_instead_of_reading_as_nothing_promoted() -> None:
    cycles = [SimpleNamespace(id="si_1", outcome="promoted"), SimpleNamespace(id="si_2", outcome="no_action")]
    off = offline(SC, cycles, "v-champion", None)  # type: ignore[arg-type]
    assert "1 promotion(s) (si_1) but no best-promoted value" in off["error"]
    check = _domains_check(off)
    assert not check["pass"] and "no best-promoted value" in check["detail"]


def test_an_unreadable_record_fails_the_check(tmp_path) -> None:  # noqa: ANN001
    fg.fix_set("cran", "cran", ["1"])
    (fg.evalsets_dir() / fg.BEST_FILE).write_text("{not json")
    off = offline(SC, [], "v-champion", None)
    assert off["error"].startswith("EvalSetError") and not _domains_check(off)["pass"]
