#!/usr/bin/env bash
# A PEP 503 package index of the CPU torch wheel and its dependencies, served over HTTP on
# 127.0.0.1, for image builds on a machine that cannot reach download.pytorch.org: host pip
# downloads them (from its own wheel cache or mirror), one folder per project, and
# `python -m http.server`'s directory listings are the index pages.
#   usage: torch_index.sh DIR PORT   (prints the server's pid; the caller stops it)
set -euo pipefail
DIR=$1
PORT=$2
PY=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TORCH_SPEC=${FRESHEN_TORCH:-torch==2.13.0}

if [ ! -d "$DIR/torch" ]; then
  "$PY" -m pip download -q -c "$REPO/requirements/constraints.txt" "$TORCH_SPEC" -d "$DIR/flat" >&2
  "$PY" - "$DIR" <<'PYEOF'
import re
import sys
from pathlib import Path

root = Path(sys.argv[1])
for wheel in (root / "flat").iterdir():
    project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    (root / project).mkdir(exist_ok=True)
    wheel.rename(root / project / wheel.name)
(root / "flat").rmdir()
PYEOF
fi
"$PY" -m http.server --bind 127.0.0.1 --directory "$DIR" "$PORT" > /dev/null 2>&1 &
echo $!
