#!/usr/bin/env bash
# The Docker API served by podman on a unix socket, for the docker Python client, Airflow's
# DockerOperator and kfp.local's DockerRunner (DOCKER_HOST=unix://$SOCKET). Left running;
# started only when nothing answers on the socket. Prints the DOCKER_HOST to use.
set -euo pipefail
SOCKET=${FRESHEN_PODMAN_SOCKET:-/run/freshen-podman.sock}
if ! curl -sf --unix-socket "$SOCKET" http://d/_ping > /dev/null 2>&1; then
  rm -f "$SOCKET"
  nohup podman system service --time=0 "unix://$SOCKET" > /var/tmp/freshen-podman-service.log 2>&1 &
  for _ in $(seq 50); do
    curl -sf --unix-socket "$SOCKET" http://d/_ping > /dev/null 2>&1 && break
    sleep 0.2
  done
fi
curl -sf --unix-socket "$SOCKET" http://d/_ping > /dev/null
echo "unix://$SOCKET"
