"""Benchmark: how many of a fresh cache's hard negatives can any corrector recover from the stale
cache? A diagnostic for the gap between the corrected arm and refresh (see
`benchmarks/results/ablation-final/seeds.md`).

Training takes each query's top-k negatives from the corrected cache; refresh takes them from a
fresh one. This script fixes one encoder mid-training (`--encoder`, e.g. the step-50 encoder of
the corrected arm) and asks, for correctors fitted offline on (stale input, fresh embedding)
pairs of that encoder: which fraction of each training query's fresh top-k negatives (positives
excluded) the corrected cache picks, and how well it tracks the fresh embeddings of passages it
was not fitted on. Rows vary what the corrector sees, and how much:

- the fitted rows: a random sample of the size a refit spends, or every passage but a held-out
  set (an in-sample fit over the whole corpus: no refit could do better from these inputs);
- the corrector's size (hidden width x depth);
- its input: the cache as stored (the pre-trained encoder's pooled last layer), or the mean-pooled
  hidden states of *every* layer of the pre-trained encoder (`--layers`: one more pass over the
  corpus, and a cache as many times wider as the model has layers plus one).

For scale, `--layers` adds the same encoder at the cache's length instead of training's, and
`--lagged` the caches that encoders a few steps older give: what refresh every N steps searches.

If the in-sample fit on the stored cache stays far below 1, the limit is what the stale
embedding holds, not the sample or the fit. Not a test: about 10 minutes on 2 CPU cores for
SciFact (two corpus passes, three with `--layers`).

    python benchmarks/corrector_ceiling.py --encoder ENCODER_DIR --layers \\
        --out benchmarks/results/corrector_ceiling.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "components"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablation import command_line, machine, write_keeping_notes  # noqa: E402

from freshen.cache import load_cache  # noqa: E402
from freshen.params import load_params  # noqa: E402
from freshen.embed_corpus import encode_options, place  # noqa: E402
from freshen.encoding import autocast_dtype, clean_text, encode, plan_batches, set_threads, token_lengths  # noqa: E402
from freshen.modeling.encoder import Encoder, model_digest, pool, resolve_model_path  # noqa: E402
from freshen.steps.common import path, prepared  # noqa: E402
from freshen.training.losses import drift_loss  # noqa: E402


class WideCorrector(nn.Module):
    """h(x) = stale + MLP(x): the residual corrector of `freshen.modeling.corrector` when x is the
    stale embedding itself, and the same shape over a wider input (every layer's pooled state)."""

    def __init__(self, d_in: int, d_out: int, hidden: int, depth: int):
        super().__init__()
        layers, width = [], d_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        last = nn.Linear(width, d_out)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp, self.d_out = nn.Sequential(*layers, last), d_out

    def forward(self, x: torch.Tensor, stale: torch.Tensor) -> torch.Tensor:
        return stale + self.mlp(x)


def fit(x: torch.Tensor, stale: torch.Tensor, fresh: torch.Tensor, rows: torch.Tensor, hidden: int, depth: int,
        epochs: int, seed: int) -> WideCorrector:
    """Adam (lr 1e-3, minibatches of 256) on the drift loss over `rows`, as a refit does."""
    torch.manual_seed(seed)
    h = WideCorrector(x.shape[1], stale.shape[1], hidden, depth)
    opt = torch.optim.Adam(h.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc=f"fit {len(rows)} rows", mininterval=10):
        for batch in torch.split(rows[torch.randperm(len(rows), generator=gen)], 256):
            loss = drift_loss(h(x[batch], stale[batch]), fresh[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return h.eval()


def layer_states(encoder: Encoder, texts: list[str], max_len: int, batch_size: int = 64) -> torch.Tensor:
    """Every layer's hidden states (embeddings included), mean-pooled and concatenated:
    [n, (layers + 1) x dim], float16, from the passage tower."""
    model = encoder.tower("passage").eval()
    features = encoder.tokenize([clean_text(t) for t in texts], "passage", max_len, pad=False)
    n_states = model.config.num_hidden_layers + 1
    device = next(model.parameters()).device
    dtype = autocast_dtype("auto", device)
    out = torch.zeros(len(texts), n_states * encoder.dim, dtype=torch.float16)
    with torch.inference_mode(), tqdm(total=len(texts), desc="every layer", mininterval=10) as bar:
        for idx in plan_batches(token_lengths(features), batch_size, 16384):
            batch = encoder.tokenizer.pad({k: [v[i] for i in idx] for k, v in features.items()}, return_tensors="pt")
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                states = model(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].to(device)
            out[torch.as_tensor(idx)] = torch.cat([pool(s.float(), mask, "mean") for s in states], 1).half().cpu()
            bar.update(len(idx))
    return out


def memo(work: Path | None, name: str, model: str, make) -> torch.Tensor:
    """`make()` once per `--work` folder and model (its weights' digest names the file): reruns
    with other sizes or samples skip the corpus passes, and another encoder never reads them."""
    if work is None:
        return make()
    f = work / f"{name}-{model_digest(model)[:16]}.npy"
    if not f.is_file():
        array = make().numpy()
        work.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.tmp")
        with open(tmp, "wb") as fh:  # written aside, then renamed: a stopped run leaves no half file
            np.save(fh, array)
        os.replace(tmp, f)
    return torch.from_numpy(np.load(f))


def topk_excluding(scores: torch.Tensor, banned: list[list[int]], k: int) -> torch.Tensor:
    """Each row's top-k columns after the banned ones (its positives) are set to -inf."""
    scores = scores.clone()
    for i, cols in enumerate(banned):
        scores[i, cols] = float("-inf")
    return scores.topk(k, dim=1).indices


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of |a_i & b_i| / k."""
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / a.shape[1] for x, y in zip(a, b)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--encoder", required=True, help="the current encoder (a Freshen checkpoint folder)")
    ap.add_argument("--sample", type=int, default=2600, help="rows of the random-sample fits (a refit's size)")
    ap.add_argument("--held-out", type=int, default=256, help="passages never fitted on, for the cosine")
    ap.add_argument("--sizes", default="384x1,1024x2", help="corrector hidden x depth, comma-separated")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--k", type=int, default=None, help="negatives per query (default train.negatives.k)")
    ap.add_argument("--layers", action="store_true", help="also fit on every layer's pooled state")
    ap.add_argument("--lagged", default="",
                    help="N=DIR,...: encoders N steps older than --encoder; their caches are what refresh "
                         "every N steps searches at worst")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep the corpus passes here (.npy) for reruns")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/corrector_ceiling.md"))
    args = ap.parse_args()
    set_threads()
    params = load_params(args.params)
    k = args.k or params.train.negatives.k
    ds = prepared(params, ROOT)
    cache = load_cache(path(ROOT, params.cache.out_dir))
    texts = ds.doc_texts(cache.ids)
    stale = torch.from_numpy(np.asarray(cache.embeddings, dtype=np.float32))
    train_len = params.train.passage_max_len or params.model.passage_max_len
    cache_len = int(cache.manifest.get("max_len") or params.model.passage_max_len)

    encoder = place(Encoder.load(args.encoder), params.encode.device)
    opts = encode_options(params.encode)
    # training embeds its targets at train.passage_max_len: that is the "fresh" a refit fits
    fresh = memo(args.work, f"fresh{train_len}", args.encoder,
                 lambda: torch.from_numpy(encode(encoder, texts, "passage", **{**opts, "max_len": train_len})))
    positives = ds.positives("train")
    row_of = cache.row_of()
    qids = sorted(positives)
    queries = memo(args.work, "queries", args.encoder,
                   lambda: torch.from_numpy(encode(encoder, [ds.queries[q] for q in qids], "query", **opts)))
    banned = [[row_of[d] for d in positives[q] if d in row_of] for q in qids]
    wide_k = max(20, k)  # the longer list whose overlap the table reports too
    fresh_top = topk_excluding(queries @ fresh.T, banned, wide_k)
    best = float((queries @ fresh.T).gather(1, fresh_top[:, :k]).mean())

    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(stale), generator=gen)
    held, rest = perm[:args.held_out], perm[args.held_out:]
    samples = {f"random {args.sample}": rest[:args.sample], f"all but {args.held_out} ({len(rest)})": rest}

    def row(inputs: str, fitted: str, size: str, table: torch.Tensor, seconds: float) -> str:
        scores = queries @ table.T
        top = topk_excluding(scores, banned, wide_k)
        cos = nn.functional.cosine_similarity(table[held], fresh[held], dim=-1).mean()
        picked = float((queries @ fresh.T).gather(1, top[:, :k]).mean())
        line = (f"| {inputs} | {fitted} | {size} | {float(cos):.4f} | {overlap(top[:, :k], fresh_top[:, :k]):.4f} "
                f"| {overlap(top, fresh_top):.4f} | {picked:.4f} | {seconds:.0f} |")
        print(line, flush=True)
        return line

    lines = [row("stale cache, no corrector", "-", "-", stale, 0)]
    inputs = {"stored cache (last layer)": stale}
    if args.layers:
        base = place(Encoder.from_params(params.model.model_dump()), params.encode.device)
        inputs[f"every layer ({base.passage_model.config.num_hidden_layers + 1} x {base.dim})"] = \
            memo(args.work, f"layers{cache_len}", str(resolve_model_path(params.model.name_or_path)),
                 lambda: layer_states(base, texts, cache_len)).float()
    for name, x in inputs.items():
        for fitted, rows in samples.items():
            for size in args.sizes.split(","):
                hidden, depth = (int(v) for v in size.split("x"))
                started = time.perf_counter()
                h = fit(x, stale, fresh, rows, hidden, depth, args.epochs, args.seed)
                with torch.no_grad():
                    table = h(x, stale)
                lines.append(row(name, fitted, size, table, time.perf_counter() - started))
    if args.layers:  # the fresh cache at the stale cache's length: what the length gap alone costs
        at_cache_len = memo(args.work, f"fresh{cache_len}", args.encoder, lambda: torch.from_numpy(
            encode(encoder, texts, "passage", **{**opts, "max_len": cache_len})))
        lines.append(row(f"fresh cache at {cache_len} tokens (no corrector)", "-", "-", at_cache_len, 0))

    for item in filter(None, args.lagged.split(",")):
        lag, _, folder = item.partition("=")
        older = place(Encoder.load(folder), params.encode.device)
        table = memo(args.work, f"lag{lag}", folder, lambda: torch.from_numpy(
            encode(older, texts, "passage", **{**opts, "max_len": train_len})))
        steps = "step" if lag == "1" else "steps"
        lines.append(row(f"a refresh {lag} {steps} ago (the encoder {lag} {steps} older, no corrector)", "-", "-",
                         table, 0))

    head = [
        "# What a corrector can recover: the ceiling of the stale cache's information", "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}, {torch.get_num_threads()} torch threads", "",
        f"Encoder `{args.encoder}`; stale cache `{params.cache.out_dir}` ({len(stale)} passages, "
        f"embedded at {cache_len} tokens by the pre-trained encoder); fresh: that encoder at "
        f"{train_len} tokens (train.passage_max_len, as training embeds its targets). {len(qids)} training "
        f"queries, positives excluded. Each fit: {args.epochs} epochs of Adam (lr 1e-3, batches of 256) on the "
        f"drift loss, h(x) = stale + MLP(x) with the last layer zero at the start (the residual corrector). "
        f"Cosine to fresh on {args.held_out} held-out passages no fit saw. Overlap: the fraction of each "
        f"query's fresh top-{k} (top-{wide_k}) negatives that the corrected cache's top-{k} (top-{wide_k}) holds. "
        f"Fresh score: mean fresh inner product of the {k} negatives picked (the fresh top-{k}'s: {best:.4f}).", "",
        f"| corrector input | fitted on | hidden x depth | cos to fresh (held out) | top-{k} overlap "
        f"| top-{wide_k} overlap | fresh score of picks | fit s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    text = "\n".join(head + lines) + "\n"
    write_keeping_notes(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()
