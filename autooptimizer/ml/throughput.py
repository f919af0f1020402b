"""Training throughput: samples/s of one bi-encoder MNRL step (query, positive, hard negative) on this device.

The same code path as `train.py` (device auto-pick, autocast on CUDA), on fixed synthetic text of realistic length,
so CPU and GPU figures are comparable.
"""

from __future__ import annotations

import time

_WORDS = ("aerodynamic boundary layer heat transfer supersonic flow wing pressure distribution experimental "
          "theoretical shock wave")


def measure(steps: int = 6, batch_size: int = 16, seq_words: int = 120) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from autooptimizer.ml.train import _null, pick_device, seed_everything, torch_module
    from autooptimizer.search.encoder import base_model_path
    from autooptimizer.settings import apply_offline_env, get_settings

    apply_offline_env()
    seed_everything(0)
    device, amp = pick_device()
    model = SentenceTransformer(base_model_path(), device=device)
    net, tok = torch_module(model[0].auto_model), model.tokenizer
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-5)
    words = _WORDS.split()
    doc = " ".join(words[i % len(words)] for i in range(seq_words))
    queries = [f"what is the effect of {words[i % len(words)]} on {words[(i * 3) % len(words)]}"
               for i in range(batch_size)]
    docs = [doc] * (2 * batch_size)

    def embed(texts):
        f = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        f = {k: v.to(device) for k, v in f.items()}
        out = net(**f).last_hidden_state
        m = f["attention_mask"].unsqueeze(-1).to(out.dtype)
        return torch.nn.functional.normalize((out * m).sum(1) / m.sum(1), dim=-1)

    def step() -> None:
        with torch.autocast(device_type="cuda", dtype=amp) if amp else _null():
            logits = embed(queries) @ embed(docs).T * 20.0
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(batch_size, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "threads": torch.get_num_threads(), "threads_setting": get_settings().threads, "batch_size": batch_size,
            "steps": steps, "seconds": round(dt, 2), "samples_per_s": round(steps * batch_size / dt, 2),
            "autocast": str(amp) if amp else None}
