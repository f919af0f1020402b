"""`autoopt demo --json` for real, from a fresh AUTOOPT_HOME: bootstrap, stack, shift to cran, the fix cycle promoted,
the bad deploy rolled back (about 10 minutes on the 2-core CPU; see docs/benchmarks.md ## Loop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autooptimizer.settings import get_settings

FIX_ARTIFACTS = ("diagnostic_report.json", "dataset_manifest.yaml", "augmented_dataset.csv", "mlflow_run_id.txt",
                 "helm_patch.yaml", "ab_test_results.json", "summary.json", "evaluation.json", "split.json")


@pytest.mark.slow
@pytest.mark.prometheus
def test_real_demo_from_a_fresh_home(autoopt_home: Path) -> None:
    if get_settings().data_dir is None or not (get_settings().data_dir / "cran").is_dir():
        pytest.skip("needs the shared scifact and cran datasets (AUTOOPT_DATA_DIR)")
    env = {**os.environ, "AUTOOPT_HOME": str(autoopt_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "autooptimizer", "demo", "--json"], env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert [c["outcome"] for c in result["cycles"]] == ["promoted", "rolled_back"]
    fix = next(p for p in result["phases"] if p["name"] == "fix")["detail"]
    assert fix["serving"] == fix["challenger"] and fix["challenger"].startswith("ltr-")
    offline = fix["offline"]
    assert offline["challenger"]["new_domain_ndcg@10"] > offline["champion"]["new_domain_ndcg@10"]
    art = Path(result["cycles"][0]["artifacts_dir"])
    for name in FIX_ARTIFACTS:
        assert (art / name).is_file(), name
    split = json.loads((art / "split.json").read_text())
    fed = {json.loads(x)["query_id"] for x in (art / "feedback.jsonl").read_text().splitlines()}
    assert fed and not fed & set(split["holdout"]), "the training feedback holds no held-out query"
    assert json.loads((art / "ab_test_results.json").read_text())["verdict"] == "pass"
    bad = next(p for p in result["phases"] if p["name"] == "bad")["detail"]
    assert bad["serving"] == fix["challenger"] and bad["bad_deploy_to_rollback_s"] < 60
