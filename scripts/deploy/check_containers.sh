#!/usr/bin/env bash
# Part of scripts/check_deployment.sh: build the CPU component image on the local base image
# (timed), then run every pipeline step in it on a tiny project and compare with the same steps
# on this machine (python -m benchmarks.deployment). Needs root (podman) and the project's venv.
#   FRESHEN_TORCH_WHEELS: the torch index to build with; unset: a local one (torch_index.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${FRESHEN_DEPLOY_OUT:-benchmarks/results/deployment}
IMAGE=${FRESHEN_IMAGE:-localhost/freshen:cpu}
BASE=${FRESHEN_BASE_IMAGE:-localhost/freshen-base:bookworm}
PORT=${FRESHEN_TORCH_INDEX_PORT:-8765}
mkdir -p "$OUT"

TORCH_WHEELS=${FRESHEN_TORCH_WHEELS:-}
if [ -z "$TORCH_WHEELS" ]; then
  INDEX_PID=$(PYTHON=python bash scripts/deploy/torch_index.sh /var/tmp/freshen-torch-index "$PORT")
  trap 'kill "$INDEX_PID"' EXIT
  TORCH_WHEELS=http://127.0.0.1:$PORT/
  sleep 1
fi

start=$(date +%s)
podman build --network host -f containers/Dockerfile.cpu -t "$IMAGE" \
  --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_WHEELS="$TORCH_WHEELS" . > "$OUT/build-cpu.log" 2>&1 \
  || { tail -20 "$OUT/build-cpu.log"; exit 1; }
build_s=$(($(date +%s) - start))
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
cached=$(grep -c -- '--> Using cache' "$OUT/build-cpu.log" || true)
printf '{"image": "%s", "base": "%s", "build_s": %s, "size_bytes": %s, "cached_layers": %s}\n' \
  "$IMAGE" "$BASE" "$build_s" "$size" "$cached" > "$OUT/build-cpu.json"
echo "built $IMAGE in ${build_s}s ($cached layers from cache, $((size / 1000000)) MB)"
podman run --rm "$IMAGE" --help > /dev/null

python -m benchmarks.deployment --image "$IMAGE" --out "$OUT"
