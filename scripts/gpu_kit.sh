#!/usr/bin/env bash
# Packs, into .gpu/ (.gitignore), what scripts/gpu_check.sh needs on a GPU machine that
# reaches no package registry and takes at most 64 MiB of files a call (issue 29):
#   .gpu/model    the pre-trained MiniLM with its weights in float16 (45 MB): the first call
#   .gpu/whl      the wheels that machine's Python 3.12 image lacks, at the versions
#                 requirements/constraints.txt pins (22 MB)
#   .gpu/scifact  the BEIR folder given (default ../shared/datasets/scifact), gzipped (3 MB)
# Usage: bash scripts/gpu_kit.sh [BEIR folder]   (after scripts/install.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=${1:-../shared/datasets/scifact}
rm -rf .gpu.tmp && mkdir -p .gpu.tmp/whl .gpu.tmp/scifact/qrels

for name in faiss-cpu pydantic pydantic_core annotated-types typing-inspection typing_extensions \
  ir_measures pytrec_eval-terrier bm25s; do
  pin=$(grep -i "^${name}==" requirements/constraints.txt)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu.tmp/whl "$pin"
done

"$PY" - "$DATA" <<'PY'
import shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from freshen.modeling.encoder import default_model_path

src, out = Path(default_model_path()), Path(".gpu.tmp/model")
shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino"))
weights = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, out / "model.safetensors")
PY
for f in corpus.jsonl queries.jsonl qrels/train.tsv qrels/test.tsv; do
  gzip -9 -c "$DATA/$f" >".gpu.tmp/scifact/$f.gz"
done
rm -rf .gpu && mv .gpu.tmp .gpu
du -sh .gpu/*
