"""Freshen: dense-retriever training with corrector networks over stale embedding caches
and TAS-Balanced batches, run as DVC stages, Airflow tasks or containers alike."""

__version__ = "0.1.0"

import logging as _logging

# faiss says at INFO, in every process, which CPU build it loaded ("Could not load library with
# AVX512 support ... Successfully loaded faiss with AVX2 support"): noise in every task log
_logging.getLogger("faiss.loader").setLevel(_logging.WARNING)
