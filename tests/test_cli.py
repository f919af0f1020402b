"""The CLI answers fast because heavy libraries are imported lazily; errors print a fix, not a traceback."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "shap", "mlflow", "crewai", "autogen_agentchat",
         "langchain", "lime", "nlpaug", "sklearn", "cedarpy", "faiss")


def test_cli_import_pulls_no_heavy_library() -> None:
    code = (
        "import sys, autooptimizer.cli as c; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing the CLI loaded heavy modules: {out}"


def test_help_lists_the_product_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "autooptimizer", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for command in ("bootstrap", "gates", "infra", "policy", "approvals", "kill-switch", "audit", "chat", "bench"):
        assert command in out.stdout


def test_config_error_prints_problem_and_fix_without_traceback(monkeypatch) -> None:
    monkeypatch.setenv("AUTOOPT_ENV", "qa")
    out = subprocess.run([sys.executable, "-m", "autooptimizer", "kill-switch", "status"], capture_output=True,
                         text=True)
    assert out.returncode == 2
    assert "AUTOOPT_ENV" in out.stderr and "Traceback" not in out.stderr
