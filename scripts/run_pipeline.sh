#!/usr/bin/env bash
# Install (if needed) and run the whole pipeline on the default data (SciFact) with DVC:
# prepare -> cluster_queries -> embed_cache -> train -> reembed -> evaluate -> promote.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
start=$(date +%s)
dvc repro "$@"
echo "dvc repro took $(( $(date +%s) - start )) s"
dvc metrics show
