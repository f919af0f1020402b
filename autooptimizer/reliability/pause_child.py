"""The child process of the crash suite: run one cycle and stop dead at one named checkpoint.

    python -m autooptimizer.reliability.pause_child --at deploy:after_commit --occurrence 1 --marker F \
        --plan '{"options": {"gate": "p95_latency"}, "means": null}'

At the `occurrence`-th time the cycle reaches checkpoint `at`, the process writes its pid to `marker` and sleeps, so
the parent can SIGKILL it at exactly that point. `means` (version -> mean NDCG@10) gives the cycle a synthetic
sample source, so A/B tests and watches decide at once without live traffic. The process inherits AUTOOPT_HOME and
the search port from its parent.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pause_child")
    parser.add_argument("--at", required=True)
    parser.add_argument("--occurrence", type=int, default=1)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--plan", required=True, help="JSON: {options: CycleOptions fields, means: {...} | null}")
    args = parser.parse_args(argv)
    plan = json.loads(args.plan)

    from autooptimizer.loop.checkpoints import add_checkpoint_hook
    from autooptimizer.loop.cycle import CycleOptions, CycleRunner
    from autooptimizer.settings import apply_offline_env

    apply_offline_env()
    seen = {"n": 0}

    def stop_here(name: str) -> None:
        if name != args.at:
            return
        seen["n"] += 1
        if seen["n"] == args.occurrence:
            Path(args.marker).write_text(str(os.getpid()))
            time.sleep(3600)

    add_checkpoint_hook(stop_here)
    source = None
    if plan.get("means"):
        from autooptimizer.testing import SyntheticSource

        source = SyntheticSource(plan["means"])
    rec = CycleRunner(source=source).run(CycleOptions(**plan.get("options", {})))
    print(json.dumps({"id": rec.id, "outcome": rec.outcome}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
