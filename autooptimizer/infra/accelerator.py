"""Which torch device the ML path runs on: a CUDA GPU when one is present, else the CPU.

The embedded default works on the CPU alone; a GPU only makes encoding and training faster (the brief: "a GPU ...
make[s] it better, never make[s] it work at all"). Vectors computed on either device share one cache entry per
encoder identity: fp32 on both, cosine to each other > 0.9999 (docs/benchmarks.md, "GPU")."""

from __future__ import annotations


def torch_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
