#!/usr/bin/env bash
# Podman as the container engine of the deployment check (Debian packages; needs root):
# podman + runc (the OCI runtime that works in this kind of sandbox), podman-compose, debootstrap
# (for the local base image), and /etc/containers/containers.conf setting runc and ulimits the
# sandbox allows. Idempotent: installs only what is missing, rewrites the conf only if it differs.
set -euo pipefail
missing=()
for tool in podman runc podman-compose debootstrap; do
  command -v "$tool" > /dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

CONF=/etc/containers/containers.conf
WANT='# Freshen deployment check (issue 26): runc (crun is absent), ulimits the sandbox allows.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
if [ "$(cat "$CONF" 2> /dev/null)" != "$WANT" ]; then
  if [ -s "$CONF" ]; then
    cp "$CONF" "$CONF.before-freshen"
  fi
  mkdir -p /etc/containers
  printf '%s\n' "$WANT" > "$CONF"
fi
podman --version
podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}'
