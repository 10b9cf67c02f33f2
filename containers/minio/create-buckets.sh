#!/bin/sh
# Buckets of the local stack: `mlflow` (MLflow artifacts) and `dvc` (the DVC remote).
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/mlflow local/dvc
