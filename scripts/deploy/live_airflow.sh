#!/usr/bin/env bash
# Part of scripts/check_deployment.sh: the DAGs on a live Airflow (`airflow standalone` on a
# throwaway AIRFLOW_HOME, driven through the REST API v2), once with orchestration.runner local
# and once with runner docker through the podman socket (podman_socket.sh, the image built by
# check_containers.sh). Installs the Docker provider of Airflow when it is missing.
# Writes live_airflow.json and live_airflow.txt to $FRESHEN_DEPLOY_OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${FRESHEN_DEPLOY_OUT:-benchmarks/results/deployment}
SOCKET=${FRESHEN_PODMAN_SOCKET:-/run/freshen-podman.sock}
IMAGE=${FRESHEN_IMAGE:-localhost/freshen:cpu}
if ! python -c "import airflow.providers.docker" 2> /dev/null; then
  python -m pip install --quiet "apache-airflow-providers-docker==4.6.1"
fi
python scripts/deploy/check_live_airflow.py --runner both --out "$OUT" \
  --docker-url "unix://$SOCKET" --image "$IMAGE" --ready-markers "$SOCKET"
