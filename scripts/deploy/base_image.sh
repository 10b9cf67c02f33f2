#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, for machines that reach Debian's mirror and
# PyPI but no image registry: debootstrap a minimal bookworm, add Debian's python3.11 with a
# venv at /opt/venv first on PATH (so `python` and `pip` are what the official image gives),
# trust this host's extra CA certificates (egress proxies), and `podman import` it as
# $FRESHEN_BASE_IMAGE. Build the component image on it with
#   --build-arg BASE_IMAGE=localhost/freshen-base:bookworm
# Skipped when the image exists (FRESHEN_REBUILD_BASE=1 forces it). Needs root.
set -euo pipefail
IMAGE=${FRESHEN_BASE_IMAGE:-localhost/freshen-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$IMAGE" && [ -z "${FRESHEN_REBUILD_BASE:-}" ]; then
  echo "base image $IMAGE exists"
  exit 0
fi

ROOTFS=$(mktemp -d /var/tmp/freshen-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase \
  bookworm "$ROOTFS" "$MIRROR"

# this host's extra CAs (e.g. a TLS-inspecting egress proxy), so pip inside builds reaches PyPI
if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
fi
chroot "$ROOTFS" update-ca-certificates
chroot "$ROOTFS" python3 -m venv /opt/venv
chroot "$ROOTFS" /opt/venv/bin/python -m pip --version
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/root/.cache

tar -C "$ROOTFS" -c . | podman import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$IMAGE"
podman run --rm "$IMAGE" python -c 'import sys, venv; print("python", sys.version.split()[0], sys.prefix)'
