"""The search service under optimization: BM25 retrieval, a fused neural reranker, FastAPI."""
