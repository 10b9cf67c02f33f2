"""Benchmarks a user reruns, each a module run from the repository root as
`python -m benchmarks.<name> --help`; their committed reports are under benchmarks/results/.

- generalize: the whole pipeline per dataset and seed, zero-shot against trained test nDCG@10
- ablation: the method's arms (in-batch, stale, corrected, refresh, random batches) at one seed
- seeds: the ablation once per seed, paired seed by seed
- faults: fault injection against the CLI (bad input, damaged artifacts, kills, concurrent runs)
- corpus_update: a corpus update of 1% and 10% of the documents served without re-embedding what did not change
- serving_fit: the corrector fitted for retrieval after training, h'(stale) against h(stale) and the re-embedded cache
- scale: training-step latency, peak memory and ANN fidelity as the cached corpus grows to 10M rows
- search: exact against ANN search and corrected-negative selection at corpus scale
- encode_throughput: Freshen's encoder against sentence-transformers on the same weights
- stage_times: the train pipeline's steps in one process on the devices given, the wall time of each
- encode_memory: peak memory of re-embedding corpora of different sizes
- deployment: every pipeline step in the component image against the same steps outside it
- kfp_local: the Kubeflow pipelines executed by kfp.local's DockerRunner

common.py holds what their reports share (machine line, command line, writing)."""
