#!/usr/bin/env bash
# The deployment check (issue 26), from nothing to every runner exercised: each part is one
# script in scripts/deploy/, run in the order below, timed; their logs and a summary go to
# $FRESHEN_DEPLOY_OUT (default benchmarks/results/deployment/). Needs root (packages, podman).
#
#   scripts/check_deployment.sh              # every part
#   scripts/check_deployment.sh kfp_local    # only the parts named (the ones before must have run)
#
# A part that fails is recorded and the next ones still run; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then export PATH=$PWD/.venv/bin:$PATH; fi
export PYTHONPATH=$PWD/components${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export FRESHEN_DEPLOY_OUT=${FRESHEN_DEPLOY_OUT:-$PWD/benchmarks/results/deployment}
export FRESHEN_PODMAN_SOCKET=${FRESHEN_PODMAN_SOCKET:-/run/freshen-podman.sock}

# in order; later parts use what earlier ones made (engine, base image, component image, socket)
PARTS=(install_podman base_image check_containers podman_socket live_airflow kfp_local check_compose)
if [ $# -gt 0 ]; then PARTS=("$@"); fi

OUT=$FRESHEN_DEPLOY_OUT
mkdir -p "$OUT/logs"
SUMMARY=$OUT/summary.md
{
  echo "# Deployment check"
  echo
  echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)."
  echo
  echo "| part | seconds | result |"
  echo "|---|---|---|"
} > "$SUMMARY"

failed=0
for part in "${PARTS[@]}"; do
  echo "== $part"
  start=$(date +%s)
  if bash "scripts/deploy/$part.sh" > "$OUT/logs/$part.log" 2>&1; then result=pass; else result=FAIL; failed=1; fi
  seconds=$(($(date +%s) - start))
  echo "| \`$part\` | $seconds | $result |" >> "$SUMMARY"
  tail -3 "$OUT/logs/$part.log"
  echo "-- $part: $result in ${seconds}s"
done
echo >> "$SUMMARY"
echo "Logs: logs/<part>.log; reports: containers.md, live_airflow.txt, kfp.md, compose.md." >> "$SUMMARY"
# what this output was made from; tests/test_deployment_check.py fails when it is stale
if [ $# -eq 0 ]; then python -m benchmarks.deployment --inputs-digest > "$OUT/inputs.sha256"; fi
cat "$SUMMARY"
exit $failed
