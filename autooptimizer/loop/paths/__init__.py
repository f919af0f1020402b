"""The cycle's paths, one per fired gate (loop/cycle.py dispatches): each takes the runner, the cycle id, the options
and the typed state, and returns (outcome, reason) or raises CycleStop.

    release.py  ndcg_drop: retrain (ml/pipeline.py) or a given challenger -> canary -> A/B -> promote; an approved
                promotion
    watch.py    the post-deploy watch, the `champion` alias, and deploy_watch
    scaling.py  p95_latency and cost_budget: the remedies of loop/remedies.py
    errors.py   retries: a diagnostic report, then rollback or restart
"""
