"""The soak: a scenario (a YAML timeline of traffic phases and events) played unattended against the whole stack,
measured, and reported with the product's success table and end-of-run invariants (`autoopt soak`).

- `scenario.py`: the timeline's schema and loader (packaged examples in `scenarios/`);
- `harness.py`: starts Prometheus, the search service and the optimizer service, plays the timeline, stops it all;
- `measure.py`: traffic windows, resources, the journal's cycles, and the arithmetic over them;
- `checks.py`: the end-of-run reads (git/service/aliases, audit, offline NDCG);
- `report.py`: soak_report.json and the self-contained soak_report.html.
"""
