"""Freshen: dense-retriever training with corrector networks over stale embedding caches
and TAS-Balanced batches, run as DVC stages, Airflow tasks or containers alike."""

__version__ = "0.1.0"
