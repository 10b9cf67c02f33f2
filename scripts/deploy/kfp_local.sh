#!/usr/bin/env bash
# Part of scripts/check_deployment.sh: the Kubeflow train and refresh pipelines executed with
# kfp.local's DockerRunner, through podman's Docker API (podman_socket.sh), on a tiny project.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOCKER_HOST=${DOCKER_HOST:-unix://${FRESHEN_PODMAN_SOCKET:-/run/freshen-podman.sock}}
python -m benchmarks.kfp_local --image "${FRESHEN_IMAGE:-localhost/freshen:cpu}" \
  --out "${FRESHEN_DEPLOY_OUT:-benchmarks/results/deployment}"
