"""Prometheus metric names the search service exports and the gates, A/B judge and rules read.

One place for the contract, so a rename cannot silently break a gate.
"""

# Histogram of /search latency in seconds, labels: model_version.
REQUEST_SECONDS = "autoopt_search_request_seconds"
# Counter of /search requests, labels: model_version, status ("ok" | "error").
REQUESTS_TOTAL = "autoopt_search_requests_total"
# Counter of failed /search requests, labels: model_version.
ERRORS_TOTAL = "autoopt_search_errors_total"
# Counter of retries of an operation, labels: operation.
RETRIES_TOTAL = "autoopt_operation_retries_total"
# Summary (sum/count) of per-query NDCG@10 computed from feedback, labels: model_version.
FEEDBACK_NDCG = "autoopt_feedback_ndcg10"
# Counter of compute seconds spent serving, labels: model_version.
COMPUTE_SECONDS_TOTAL = "autoopt_compute_seconds_total"
# Counter of spend (compute seconds x price), labels: model_version.
COST_TOTAL = "autoopt_cost_dollars_total"
# Gauge: the configured budget in dollars.
COST_BUDGET = "autoopt_cost_budget_dollars"
# Gauge: the share of traffic routed to the canary version, labels: model_version.
CANARY_WEIGHT = "autoopt_canary_weight"
# Gauge: 1 for each model version currently loaded, labels: model_version, role ("stable" | "canary").
MODEL_INFO = "autoopt_model_loaded"
# Gauge: replicas (worker slots) the service runs with.
REPLICAS = "autoopt_search_replicas"
# Histogram of the time of one stage of a /search request in seconds, labels: stage (bm25, encode, rerank, fusion,
# serialise; see search/stages.py).
STAGE_SECONDS = "autoopt_search_stage_seconds"
