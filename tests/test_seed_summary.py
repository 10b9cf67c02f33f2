"""benchmarks.seeds judges the goals per seed and on the mean of the paired differences."""

import json

import pytest

from benchmarks import ablation
from benchmarks import seeds as seeds_module
from benchmarks.common import NOTES_MARKER


@pytest.fixture(scope="module")
def seeds():
    return seeds_module


def arm(name, ndcg, train=8000, reembed=0, overlap=None):
    out = {"arm": name, "test": {"ndcg_at_10": ndcg}, "train_passage_passes": train, "reembed_passes": reembed}
    if overlap:
        out["top100_overlap_corrected_vs_fresh"], out["top100_overlap_stale_vs_fresh"] = overlap
    return out


def test_goals_are_judged_per_seed_and_on_the_mean(seeds, tmp_path):
    runs = {
        13: {
            "corrected": arm("corrected", 0.740, overlap=(0.71, 0.70)),
            "refresh": arm("refresh", 0.750, reembed=98000),
            "stale": arm("stale", 0.720),
        },
        14: {
            "corrected": arm("corrected", 0.742, overlap=(0.69, 0.70)),
            "refresh": arm("refresh", 0.738, reembed=98000),
        },
    }
    for seed, arms in runs.items():
        (tmp_path / str(seed)).mkdir()
        for name, result in arms.items():
            (tmp_path / str(seed) / f"{name}.json").write_text(json.dumps(result))
    loaded = {s: seeds.load_seed(tmp_path / str(s)) for s in runs}
    assert loaded == runs
    text = seeds.report(loaded, "cmd")
    gap = next(line for line in text.splitlines() if line.startswith("- corrected minus refresh"))
    # -0.010 misses, +0.004 meets; the mean -0.003 meets the -0.005 goal
    assert "13: -0.0100, 14: +0.0040; met on 1 of 2 seeds; mean -0.0030" in gap and gap.endswith("**met** on the mean")
    assert "13: 0.0755, 14: 0.0755; **met** on every seed" in text  # 8000 / 106000
    assert "corrected minus stale (goal > 0): met on 1 of 1 seeds; mean difference +0.0200 (one seed)" in text
    assert "met on 1 of 2 seeds" in next(line for line in text.splitlines() if "top-100 overlap" in line)
    assert (
        "| 14 | 0.7420 | 0.7380 | - |" in text
        and "| mean over the seeds that ran it | 0.7410 | 0.7440 | 0.7200 |" in text
    )

    runs[14]["corrected"]["test"]["ndcg_at_10"] = 0.730  # mean gap -0.0145
    assert "**not met** on the mean" in seeds.report(runs, "cmd")


def test_a_folder_without_results_is_refused(seeds, tmp_path):
    with pytest.raises(SystemExit, match="no arm results"):
        seeds.load_seed(tmp_path)


def test_variants_of_the_corrected_arm_are_paired_with_refresh_and_corrected(seeds):
    runs = {
        13: {
            "corrected": arm("corrected", 0.740),
            "refresh": arm("refresh", 0.750, reembed=98000),
            "corrected_random": arm("corrected_random", 0.730),
            "corrected_wide": {
                **arm("corrected_wide", 0.748, train=9600, overlap=(0.66, 0.70)),
                "variant": "hidden 1536",
                "test_corrected_cache": {"ndcg_at_10": 0.75},
                "test_stale_cache": {"ndcg_at_10": 0.70},
            },
        },
        14: {"corrected": arm("corrected", 0.742), "refresh": arm("refresh", 0.738, reembed=98000)},
    }
    text = seeds.report(runs, "cmd")
    section = text.split("## Variants of the corrected arm, paired by seed")[1]
    assert "`corrected_wide` (hidden 1536):" in section and "corrected_random" not in section
    assert "minus refresh: 13: -0.0020; met on 1 of 1 seeds (goal >= -0.005); mean -0.0020 (one seed)" in section
    assert "minus corrected: 13: +0.0080; mean +0.0080 (one seed)" in section
    assert "passes / refresh's (goal <= 0.1): 13: 0.0906" in section  # 9600 / 106000
    assert "corrected vs stale (goal: corrected higher): 13: 0.6600 vs 0.7000; met on 0 of 1 seeds" in section
    assert "h(cache) vs stale cache nDCG@10: 13: 0.7500 vs 0.7000" in section
    del runs[13]["corrected_wide"]
    assert "## Variants" not in seeds.report(runs, "cmd")


def test_regenerating_a_report_keeps_its_hand_written_notes(seeds, tmp_path):
    report = tmp_path / "seeds.md"
    report.write_text("# old table\n| 13 | 0.7000 |\n\n" + NOTES_MARKER + "\n## How it was run\n- by hand\n")
    seeds.write_keeping_notes(report, "# new table\n| 13 | 0.7400 |\n")
    assert report.read_text() == "# new table\n| 13 | 0.7400 |\n\n" + NOTES_MARKER + "\n## How it was run\n- by hand\n"
    seeds.write_keeping_notes(report, "# newer table\n")  # again: the notes are kept once, not doubled
    assert report.read_text().count("- by hand") == 1 and report.read_text().startswith("# newer table\n")
    report.write_text("# a report without notes\n")
    seeds.write_keeping_notes(report, "# replaced\n")
    assert report.read_text() == "# replaced\n" and [p.name for p in tmp_path.iterdir()] == ["seeds.md"]  # no temp left


def test_tas_minus_random_is_paired_for_every_strategy_that_ran_both(seeds):
    runs = {
        13: {
            "corrected": arm("corrected", 0.740),
            "corrected_random": arm("corrected_random", 0.730),
            "refresh": arm("refresh", 0.750, reembed=98000),
            "refresh_random": arm("refresh_random", 0.755, reembed=98000),
        },
        14: {"corrected": arm("corrected", 0.742), "corrected_random": arm("corrected_random", 0.722)},
    }
    lines = seeds.report(runs, "cmd").splitlines()
    corrected = next(line for line in lines if line.startswith("- corrected minus corrected_random"))
    assert "13: +0.0100, 14: +0.0200; TAS higher on 2 of 2 seeds; mean difference +0.0150" in corrected
    refresh = next(line for line in lines if line.startswith("- refresh minus refresh_random"))
    assert "13: -0.0050; TAS higher on 0 of 1 seeds" in refresh
    assert not any(line.startswith("- stale minus stale_random") for line in lines)  # never ran


def test_ablation_arms_set_strategy_and_batching_and_unknown_arms_are_refused(tmp_path):
    base = {
        "train": {"steps": 100, "batching": "tas", "negatives": {"strategy": "corrected", "refresh_every": 0}},
        "reembed": {},
        "evaluate": {},
    }
    got = {
        a: ablation.arm_params(base, a, 100, 5, tmp_path)
        for a in ("corrected", "refresh", "refresh_random", "stale_random")
    }
    assert [
        (p["train"]["negatives"]["strategy"], p["train"]["batching"], p["train"]["negatives"]["refresh_every"])
        for p in got.values()
    ] == [("corrected", "tas", 0), ("refresh", "tas", 5), ("refresh", "random", 5), ("stale", "random", 0)]
    assert base["train"]["negatives"]["strategy"] == "corrected"  # the base params are not touched
    with pytest.raises(SystemExit, match="unknown training arm 'corrected_rand'"):
        ablation.arm_params(base, "corrected_rand", 100, 5, tmp_path)


def test_the_gap_is_also_judged_against_the_strongest_arm_without_a_corrector(seeds):
    runs = {
        13: {
            "corrected": arm("corrected", 0.740),
            "refresh": arm("refresh", 0.743, reembed=98000),
            "refresh_random": arm("refresh_random", 0.750, reembed=98000),
            "stale": arm("stale", 0.730),
            "zero_shot": arm("zero_shot", 0.800, train=0),
        },  # zero-shot is no trained rival
        14: {"corrected": arm("corrected", 0.742), "refresh": arm("refresh", 0.738, reembed=98000)},
    }
    lines = seeds.report(runs, "cmd").splitlines()
    line = next(line for line in lines if line.startswith("- corrected minus the strongest arm"))
    assert "13: -0.0100 (vs refresh_random), 14: +0.0040 (vs refresh); met on 1 of 2 seeds; mean -0.0030" in line
    assert line.endswith("**met** on the mean")
    fixed = next(line for line in lines if line.startswith("- corrected minus refresh_random"))
    assert "13: -0.0100; met on 0 of 1 seeds; mean -0.0100 (one seed): **not met** on the mean" in fixed
    runs[13].pop("refresh_random")  # with no random-batch baseline the refresh line says it all
    assert not any(
        line.startswith("- corrected minus the strongest") for line in seeds.report(runs, "cmd").splitlines()
    )
