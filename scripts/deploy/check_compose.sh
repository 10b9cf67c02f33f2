#!/usr/bin/env bash
# The compose stack, checked for real (see scripts/deploy/compose_check.py): builds the stack's
# images on a local base, brings up containers/docker-compose.yaml + docker-compose.local.yaml with
# podman-compose, runs freshen_train on a tiny project through Airflow's REST API and asserts every
# task succeeded and the MLflow registry holds a champion; then takes everything down, also on
# failure. Summary: benchmarks/results/deployment/compose.md.
#
# Needs, as root: podman, podman-compose, the base image ($FRESHEN_BASE_IMAGE, default
# localhost/freshen-base:bookworm), the component image freshen:cpu and the podman Docker-API
# socket ($FRESHEN_PODMAN_SOCKET, default /run/freshen-podman.sock); scripts/check_deployment.sh
# provides them before it calls this. Python: $FRESHEN_PYTHON, else .venv/bin/python, else python3
# (with the project's dev dependencies: torch and transformers make the tiny model).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${FRESHEN_PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
for tool in podman podman-compose; do
  command -v "$tool" > /dev/null || { echo "check_compose: $tool not found (apt-get install $tool)" >&2; exit 2; }
done
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" scripts/deploy/compose_check.py "$@"
