#!/usr/bin/env bash
# The Docker API served by podman on a unix socket, for the docker Python client, Airflow's
# DockerOperator and kfp.local's DockerRunner (DOCKER_HOST=unix://$SOCKET). Left running;
# started only when nothing answers on the socket. Prints the DOCKER_HOST to use.
set -euo pipefail
SOCKET=${FRESHEN_PODMAN_SOCKET:-/run/freshen-podman.sock}
# A service whose working directory was deleted (it was started in a checkout since removed) still
# answers pings, but conmon fails in every container it starts ("write child: broken pipe"): stop it.
for pid in $(pgrep -f "podman system service .*unix://$SOCKET" || true); do
  if [[ "$(readlink "/proc/$pid/cwd" 2> /dev/null)" == *"(deleted)" ]]; then
    echo "podman service $pid runs in a deleted folder: restarting it"
    kill "$pid" && sleep 1
  fi
done
if ! curl -sf --unix-socket "$SOCKET" http://d/_ping > /dev/null 2>&1; then
  rm -f "$SOCKET"
  # from /, so that the service outlives the checkout that started it
  (cd / && nohup podman system service --time=0 "unix://$SOCKET" > /var/tmp/freshen-podman-service.log 2>&1 &)
  for _ in $(seq 50); do
    curl -sf --unix-socket "$SOCKET" http://d/_ping > /dev/null 2>&1 && break
    sleep 0.2
  done
fi
curl -sf --unix-socket "$SOCKET" http://d/_ping > /dev/null
echo "unix://$SOCKET"
