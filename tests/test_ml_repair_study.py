"""The in-process repair study's arguments: a feedback size must name one or more queries."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autooptimizer.errors import InputError
from autooptimizer.ml.adapt import Adaptation
from autooptimizer.ml.repair_study import study


@pytest.mark.parametrize("sizes", [[-1], [0], [10, 0], [-3, None]])
def test_a_size_below_one_is_refused_before_any_fit(ml_world: dict, sizes: list[int | None]) -> None:
    """`-1` used to slice the seed's order as `order[:-1]`: a row trained on all but one query, labelled with that
    count, as if asked for; `0` failed deep in the fit with "collect more feedback"."""
    with pytest.raises(InputError, match="at least 1") as err:
        study("dom", 1, {"none": Adaptation()}, sizes, original="orig")
    assert "10,20,40,all" in err.value.fix


def test_the_cli_refuses_a_negative_size(ml_world: dict, tmp_path: Path) -> None:
    from autooptimizer.cli.app import app

    out = CliRunner().invoke(app, ["bench", "study", "--domains", "dom", "--original", "orig", "--variants", "none",
                                   "--registry", str(tmp_path / "registry.json"), "--sizes", "10,-5"])
    assert isinstance(out.exception, InputError) and "-5" in str(out.exception)
    assert out.stdout == ""  # no row printed before the refusal
