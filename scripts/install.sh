#!/usr/bin/env bash
# Create .venv (or reuse it) and install Freshen with every dependency, from nothing.
# torch goes first and alone: pinned to the CPU build so pip never pulls CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${FRESHEN_VENV:-.venv}
TORCH_SPEC=${FRESHEN_TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
# every other version pinned by requirements/constraints.txt (frozen from a green run)
"$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e ".[dev]"
"$VENV/bin/python" -m pip check
echo "installed into $VENV: $("$VENV/bin/python" -c 'import torch, mlflow, dvc.version, airflow, faiss; print("torch", torch.__version__, "mlflow", mlflow.__version__, "dvc", dvc.version.__version__, "airflow", airflow.__version__)' 2>/dev/null)"
