"""Benchmark: how much fresh data does a corrector need? A diagnostic for the corrected arm.

Training fits the corrector online, on the few dozen targets each step embeds fresh, while the
encoder moves under it. This script asks what a corrector of the same shape reaches when it is
instead fitted offline on N random (stale, fresh) pairs of the *final* encoder, for several N:
mean cosine to the fresh embedding on passages it never saw, and, with every passage scored
through it, test nDCG@10 and top-100 / top-10 overlap with the fresh cache's lists. The first
rows are the stale cache and the corrector training saved, for reference. Not a test: run it
by hand after `dvc repro` (it reads the pipeline's initial cache, re-embedded cache and model).

    python benchmarks/corrector_fit.py --pairs 80,500,2000,4000 --out benchmarks/results/corrector_fit.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "components"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablation import command_line, machine  # noqa: E402

from freshen.atomic import write_text  # noqa: E402
from freshen.cache import load_cache  # noqa: E402
from freshen.params import load_params  # noqa: E402
from freshen.embed_corpus import encode_options, place  # noqa: E402
from freshen.encoding import encode, set_threads  # noqa: E402
from freshen.modeling.corrector import Corrector  # noqa: E402
from freshen.modeling.encoder import Encoder  # noqa: E402
from freshen.retrieval import evaluate_run, exclude_self, search, to_run  # noqa: E402
from freshen.steps.common import path, prepared  # noqa: E402
from freshen.steps.evaluate import make_index, overlap_at  # noqa: E402
from freshen.training.losses import drift_loss  # noqa: E402


def fit(stale: torch.Tensor, fresh: torch.Tensor, rows: torch.Tensor, arch: str, hidden: int, normalize: bool,
        epochs: int, seed: int) -> Corrector:
    """A fresh corrector fitted by Adam on the drift loss over `rows`, minibatches of 256."""
    torch.manual_seed(seed)
    h = Corrector(stale.shape[1], arch, hidden, 1, normalize)
    opt = torch.optim.Adam(h.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.split(rows[torch.randperm(len(rows), generator=gen)], 256):
            loss = drift_loss(h(stale[batch]), fresh[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return h.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--pairs", default="80,500,2000,4000", help="comma-separated numbers of fitted pairs")
    ap.add_argument("--variants", default="residual_mlp,residual_mlp+normalize,linear",
                    help="arch[+normalize], comma-separated")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/corrector_fit.md"))
    args = ap.parse_args()
    set_threads()
    params = load_params(args.params)
    ds = prepared(params, ROOT)
    stale_c = load_cache(path(ROOT, params.cache.out_dir))
    fresh_c = load_cache(path(ROOT, params.reembed.out_dir))
    if stale_c.ids != fresh_c.ids:
        raise SystemExit(f"{fresh_c.path}: doc ids differ from {stale_c.path}")
    stale = torch.from_numpy(np.asarray(stale_c.embeddings, dtype=np.float32))
    fresh = torch.from_numpy(np.asarray(fresh_c.embeddings, dtype=np.float32))
    model_dir = path(ROOT, params.train.out_dir)
    encoder = place(Encoder.load(model_dir / "encoder"), params.encode.device)
    qids = sorted(ds.evaluation_qrels(args.split))
    queries = encode(encoder, [ds.queries[q] for q in qids], "query", **encode_options(params.encode))
    cfg = params.evaluate.model_copy(update={"use_gpu": False})
    _, fresh_rows = search(make_index(fresh.numpy(), cfg), queries, 100)
    hidden = params.train.corrector.hidden

    def row(name: str, n: int | str, table: torch.Tensor, held: torch.Tensor, seconds: float) -> str:
        scores, rows = search(make_index(np.ascontiguousarray(table.numpy()), cfg), queries, 100)
        m = evaluate_run(ds.evaluation_qrels(args.split), exclude_self(to_run(qids, stale_c.ids, scores, rows)))
        cos = torch.nn.functional.cosine_similarity(table[held], fresh[held], dim=-1).mean()
        return (f"| {name} | {n} | {float(cos):.4f} | {m['ndcg_at_10']:.4f} | {overlap_at(rows, fresh_rows):.4f} "
                f"| {overlap_at(rows[:, :10], fresh_rows[:, :10]):.4f} | {seconds:.0f} |")

    everyone = torch.arange(len(stale))
    lines = [row("stale cache", 0, stale, everyone, 0)]
    if (model_dir / "corrector").is_dir():
        with torch.no_grad():
            online = Corrector.load(model_dir / "corrector", expect_dim=stale.shape[1])(stale)
        lines.append(row("the corrector training saved (online)", "-", online, everyone, 0))
    perm = torch.randperm(len(stale), generator=torch.Generator().manual_seed(args.seed))
    for n in (int(x) for x in args.pairs.split(",")):
        if not 0 < n < len(stale):
            raise SystemExit(f"--pairs: {n} must be between 1 and {len(stale) - 1}")
        for variant in args.variants.split(","):
            arch, _, flag = variant.partition("+")
            started = time.perf_counter()
            h = fit(stale, fresh, perm[:n], arch, hidden, flag == "normalize", args.epochs, args.seed)
            with torch.no_grad():
                table = h(stale)
            lines.append(row(variant, n, table, perm[n:], time.perf_counter() - started))
            print(lines[-1], flush=True)

    head = [
        "# How much fresh data a corrector needs (offline fit against the final encoder)", "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}, {torch.get_num_threads()} torch threads", "",
        f"Cache `{params.cache.out_dir}` (stale) against `{params.reembed.out_dir}` (the trained "
        f"encoder's re-embedding), {len(stale)} passages; {args.split} split, {len(qids)} queries; the encoder "
        f"and corrector in `{params.train.out_dir}`. "
        f"Each fitted corrector: {args.epochs} epochs of Adam (lr 1e-3, batches of 256) on the drift loss "
        f"over N random pairs (seed {args.seed}); its cosine is measured on the passages it was not fitted "
        "on (the first two rows: over every passage), its retrieval with every passage scored through it.", "",
        "| corrector | fitted pairs N | cos to fresh (unseen passages) | nDCG@10 | top-100 overlap with fresh "
        "| top-10 overlap | fit s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    text = "\n".join(head + lines) + "\n"
    write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()
