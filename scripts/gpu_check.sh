#!/usr/bin/env bash
# Issue 29's GPU check, on a GPU machine with PyTorch, transformers and sentence-transformers
# but no registry (this workplace's `device` tool), from the kit of scripts/gpu_kit.sh. Two
# calls, since one carries at most 64 MiB:
#   1. carry [".gpu/model"]:            bash scripts/gpu_check.sh model
#   2. carry [".gpu/whl", ".gpu/scifact"], on the same (still warm) machine: bash scripts/gpu_check.sh
# The second writes under $OUT: nvidia-smi, encode throughput against sentence-transformers on
# the GPU (same weights, texts and max length; cosine per text), and the SciFact train pipeline
# with encode.device and train.device on cuda, the wall time of each step (benchmarks/stage_times.py).
# A dry run elsewhere: DEVICE=cpu DOCS=50 STAGE_ARGS="--set train.steps=2" (and PYTHON=.venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=/tmp/freshen-gpu-kit
OUT=${OUT:-.gpu/out} DEVICE=${DEVICE:-cuda} DOCS=${DOCS:-5183} PYTHON=${PYTHON:-python3}
if [ "${1:-}" = model ]; then  # back to float32 (the values float16 kept), as the model is everywhere else
  rm -rf "$KIT/model" && mkdir -p "$KIT" && cp -r .gpu/model "$KIT/model" || exit 3
  "$PYTHON" -c "import sys; from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1]); save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()}, sys.argv[1])" \
    "$KIT/model/model.safetensors" && du -sh "$KIT/model"
  exit $?
fi
mkdir -p "$OUT"
[ -f "$KIT/model/model.safetensors" ] || { echo "no $KIT/model: run 'bash scripts/gpu_check.sh model' first, on this machine"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD/components:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import bm25s, faiss, ir_measures, pydantic" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 4
fi
mkdir -p /tmp/scifact/qrels
for f in corpus.jsonl queries.jsonl qrels/train.tsv qrels/test.tsv; do gunzip -c ".gpu/scifact/$f.gz" >"/tmp/scifact/$f"; done
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
"$PYTHON" -m benchmarks.encode_throughput --data /tmp/scifact --docs "$DOCS" --batch-size 256 --model "$KIT/model" \
  --device "$DEVICE" --out "$OUT/encode_throughput.md" 2>&1 | tail -n 30
# shellcheck disable=SC2086  # STAGE_ARGS: words on purpose
"$PYTHON" -m benchmarks.stage_times --data /tmp/scifact --work /tmp/stages --device "$DEVICE" --model "$KIT/model" \
  ${STAGE_ARGS:-} --out "$OUT/stage_times.md" 2>&1 | tr '\r' '\n' | grep -v "/s\]$" | tail -n 80 | tee "$OUT/stages.log"
cp /tmp/stages/metrics/*.json "$OUT/" 2>/dev/null
ls -la "$OUT"
