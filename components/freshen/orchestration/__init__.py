"""Orchestration: the same `freshen <step>` CLIs run by Airflow (dags/), in the worker's own
Python, in Docker or on Kubernetes, and compiled for Kubeflow Pipelines.

Importing this package (or `config`, `runs`, `commands`) needs neither Airflow nor kfp, so the
containers and the CLI stay light; `airflow_tasks` and `kfp_pipeline` import those themselves."""
