"""The local infrastructure the project starts: a real Prometheus and the local stack (Prometheus + search service)."""
