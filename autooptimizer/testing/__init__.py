"""Test doubles that users of the library need too (as openai-agents ships its `testing` helpers).

- `TinyService`, `make_versions`: the real search app over a tiny corpus with cheap `bm25` versions, on a free
  loopback port. `autoopt bench faults` builds its worlds from them; tests of the loop use them.
- `SyntheticSource`: a `SampleSource` whose per-version NDCG@10 and latency samples are drawn around chosen means,
  so A/B tests and watches decide at once.

Doubles only the project's own tests need (a scripted agent world, a fake Prometheus, live-stack helpers) live in
`tests/support/`.
"""

from autooptimizer.testing.synthetic_source import SyntheticSource
from autooptimizer.testing.tiny_service import TinyService, make_versions

__all__ = ["SyntheticSource", "TinyService", "make_versions"]
