"""The shipped SciFact copy, when present, loads and validates with the default params."""

from pathlib import Path

import pytest
import yaml
from freshen.data.beir import load_beir
from freshen.data.fetch import verify_checksums

REPO = Path(__file__).resolve().parents[1]
SCIFACT = (REPO / "../shared/datasets/scifact").resolve()
pytestmark = [pytest.mark.scifact, pytest.mark.skipif(not SCIFACT.is_dir(), reason="no ../shared/datasets/scifact")]


def test_scifact_checksums_and_counts():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    verify_checksums(SCIFACT, params["data"]["sha256"])
    ds = load_beir(SCIFACT)
    # BEIR's published SciFact figures (Thakur et al. 2021, table 1): 5,183 documents, 300 test
    # queries with 1.1 judgements each (339); 809 train queries in its train qrels
    assert len(ds.corpus) == 5183 and len(ds.qrels["train"]) == 809 and len(ds.qrels["test"]) == 300
    assert sum(len(d) for d in ds.qrels["test"].values()) == 339
