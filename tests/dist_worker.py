"""One rank of a data-parallel training run on tiny data, for tests/test_distributed.py.

    python tests/dist_worker.py FOLDER   (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT as torchrun sets them)

FOLDER holds `setup.json` (the dataset, model, cache, clusters, train section, seed); the rank
writes `rank<R>.pt` there: the first step's loss, every step's negatives, the counters, and the
trained encoder's and corrector's weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from freshen.cache import load_cache  # noqa: E402
from freshen.data.beir import load_beir  # noqa: E402
from freshen.modeling.encoder import Encoder  # noqa: E402
from freshen.training.distributed import World  # noqa: E402
from freshen.training.loop import Trainer  # noqa: E402
from recorder import Recorder  # noqa: E402
from tiny import train_params  # noqa: E402


def main(folder: Path) -> None:
    setup = json.loads((folder / "setup.json").read_text())
    torch.set_num_threads(1)
    world = World.from_env()
    ds = load_beir(setup["beir"])
    ds.qrels["dev"] = {q: ds.qrels["train"].pop(q) for q in setup["dev"]}
    rec = Recorder()
    trainer = Trainer(
        Encoder.from_params(setup["model"]),
        ds,
        load_cache(setup["cache"]),
        setup["clusters"],
        train_params(setup["train"]),
        setup["seed"],
        hooks=[rec],
        world=world,
    )
    result = trainer.run()
    torch.save(
        {
            "loss": [r["loss"] for r in result.curve],
            "negatives": [rows for _, rows in rec.picked],
            "counters": {k: v for k, v in result.counters.as_dict().items() if k != "wall_seconds"},
            "dev": [v.get("dev_ndcg_at_10") for v in result.validations],
            "encoder": {k: v.detach().clone() for k, v in result.encoder.state_dict().items()},
            "corrector": {k: v.detach().clone() for k, v in result.corrector.state_dict().items()},
        },
        folder / f"rank{world.rank}.pt",
    )
    world.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
