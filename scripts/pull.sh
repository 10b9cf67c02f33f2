#!/usr/bin/env bash
# `dvc pull` of the artifacts, after checking that the default DVC remote is there: a clone under
# another parent folder has no ../freshen-dvc-remote beside it, and `dvc pull` alone then says
# "Everything is up to date" before failing. The check names the fix:
#   dvc remote modify --local local url /path/to/freshen-dvc-remote
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
python -m freshen.dvc_repo check-remote
dvc pull "$@"
