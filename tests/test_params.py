"""params.yaml's schema and its one loader: the committed file validates to the default pipeline's
values, every channel (the file, $FRESHEN_SET, --set-json, --set) is validated the same way before
any work, and errors name the file line or the channel and the dotted field."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from freshen.config import params_hash
from freshen.errors import FreshenError
from freshen.params import Params, load_params, validate_params
from freshen.params.base import Section
from freshen.params.markdown import markdown
from freshen.params.train import TrainParams
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
NO_ENV: dict = {}


def committed() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def errors_of(call) -> str:
    with pytest.raises(FreshenError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def old_params_hash(raw: dict, sections: list[str]) -> str:
    """params_hash as it was computed on the untyped dict, before the schema."""
    blob = json.dumps({s: raw.get(s) for s in sections}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def test_the_committed_params_are_the_schema_defaults_value_for_value():
    raw = committed()
    assert load_params(PARAMS, environ=NO_ENV).model_dump() == raw
    assert Params().model_dump() == raw  # every default lives in the schema and equals params.yaml
    assert list(Params.model_fields) == list(raw)  # same section order as the file


def test_artifact_hashes_of_the_default_params_are_unchanged():
    """train_state.json and the cache manifests record params_hash: the default params give the same digests."""
    raw, params = committed(), load_params(PARAMS, environ=NO_ENV)
    for sections in (
        ["seed", "model", "train"],
        ["model", "encode", "cache"],
        ["encode", "reembed"],
        ["encode"],
        ["encode", "orchestration"],
    ):
        assert params_hash(params, sections) == old_params_hash(raw, sections)
    # pinned: a changed train default changes it (train.negatives.ann_index IVF4096,SQ8 made 6b870921fdac451f
    # 07ad8bea26512a4b; train.corrector.serving_fit on, 20 epochs with anchor 10, made it 6b52040e59dc934d;
    # train.micro_batch 4 made it 0248bcca051c4a06; train.negatives.device_memory_gb 4 made it 43a54ac394a5aee1)
    assert params_hash(params, ["seed", "model", "train"]) == "43a54ac394a5aee1"


def test_a_file_missing_a_section_gets_the_schema_defaults(tmp_path):
    raw = committed()
    del raw["orchestration"], raw["train"]["corrector"]
    raw["train"]["steps"] = 40
    params = load_params(write(tmp_path, raw), environ=NO_ENV)
    assert params.orchestration == Params().orchestration and params.orchestration.num_shards == 4
    assert params.train.corrector.ce_weight == 1.0 and params.train.steps == 40
    assert load_params(write(tmp_path, {}), environ=NO_ENV) == Params()  # an empty file: the default pipeline


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("lr", "fast", "train.lr: Input should be a valid number, got 'fast'"),
        ("lr_typo", 1.0, "train.lr_typo: unknown key"),
        ("steps", 5.5, "train.steps: Input should be a valid integer, got 5.5"),
        ("steps", True, "train.steps: Input should be a valid integer, got True"),
    ],
)
def test_the_file_names_the_line_and_field_of_a_bad_value(tmp_path, key, value, message):
    raw = committed()
    raw["train"][key] = value
    path = write(tmp_path, raw)
    error = errors_of(lambda: load_params(path, environ=NO_ENV))
    assert error.startswith(f"{path}:{line_of(path.read_text(), f'  {key}:')}: {message}")


def test_the_committed_file_reports_its_own_line_numbers(tmp_path):
    text = PARAMS.read_text().replace("  lr: 6.0e-5", "  lr: fast")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert errors_of(lambda: load_params(path, environ=NO_ENV)).startswith(
        f"{path}:{line_of(text, '  lr: fast')}: train.lr: Input should be a valid number"
    )


def test_every_override_channel_rejects_unknown_keys_and_bad_types_naming_itself():
    cases = {
        "--set": lambda v: load_params(PARAMS, sets=[f"train.{v[0]}={v[1]}"], environ=NO_ENV),
        "--set-json": lambda v: load_params(PARAMS, set_json=json.dumps({f"train.{v[0]}": v[1]}), environ=NO_ENV),
        "$FRESHEN_SET": lambda v: load_params(PARAMS, environ={"FRESHEN_SET": json.dumps({f"train.{v[0]}": v[1]})}),
    }
    for channel, load in cases.items():
        assert (
            errors_of(lambda load=load: load(("lrr", 1)))
            == f"{channel} train.lrr: unknown key (see docs/params.md for "
            "the keys there are)"
        )
        assert (
            errors_of(lambda load=load: load(("lr", "fast")))
            == f"{channel} train.lr: Input should be a valid number, got 'fast'"
        )
    assert errors_of(lambda: load_params(PARAMS, sets=["trian.steps=5"], environ=NO_ENV)).startswith(
        "--set trian.steps: unknown key"
    )
    assert (
        errors_of(lambda: load_params(PARAMS, sets=["train.steps"], environ=NO_ENV))
        == "--set train.steps: must look like key.sub=value"
    )
    assert errors_of(lambda: load_params(PARAMS, environ={"FRESHEN_SET": "[1]"})).startswith(
        "$FRESHEN_SET: must be a JSON object of dotted keys"
    )
    assert errors_of(lambda: load_params(PARAMS, set_json="{", environ=NO_ENV)).startswith("--set-json: not valid JSON")


def test_channels_apply_in_the_documented_order():
    """The file, then $FRESHEN_SET, then --set-json, then --set: a later channel wins on the same key."""
    env = {"FRESHEN_SET": json.dumps({"train.steps": 30, "train.batch_size": 8, "orchestration.num_shards": 2})}
    params = load_params(
        PARAMS,
        sets=["train.steps=50", "train.lr=1e-4"],
        set_json=json.dumps({"train.steps": 40, "train.batch_size": 12}),
        environ=env,
    )
    assert (params.train.steps, params.train.batch_size, params.orchestration.num_shards) == (50, 12, 2)
    assert params.train.lr == 1e-4  # "--set" values are YAML: 1e-4 is a number
    assert load_params(PARAMS, sets=["model.name_or_path=null"], environ=NO_ENV).model.name_or_path is None
    # an override is checked against the schema, not against what the file happens to hold
    assert load_params(PARAMS, sets=["train.teacher.scores=t.tsv"], environ=NO_ENV).train.teacher.scores == "t.tsv"


def test_an_integer_is_a_number_but_a_number_is_no_integer():
    params = load_params(PARAMS, sets=["train.lr=1", "train.corrector.ce_weight=0"], environ=NO_ENV)
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)
    assert isinstance(params.train.corrector.ce_weight, float)
    assert "Input should be a valid integer" in errors_of(
        lambda: load_params(PARAMS, sets=["train.steps=1.0"], environ=NO_ENV)
    )


# the train section's refusals: what the trainer never sees, refused when params are loaded
TRAIN_REFUSALS = [
    ({"steps": 0}, "train.steps: Input should be greater than or equal to 1"),
    (
        {"negatives.strategy": "hard"},
        "train.negatives.strategy: Input should be 'in_batch', 'stale', 'corrected' or 'refresh'",
    ),
    ({"negatives.selection": "best"}, "train.negatives.selection: Input should be 'topk', 'gumbel' or 'balanced'"),
    ({"batching": "cluster"}, "train.batching: Input should be 'tas' or 'random'"),
    ({"negatives.strategy": "refresh"}, "train.negatives.refresh_every: must be > 0 for strategy 'refresh'"),
    (
        {"negatives.strategy": "stale", "negatives.refresh_every": 5},
        "train.negatives.refresh_every: strategy 'stale' never refreshes",
    ),
    ({"corrector.arch": "mlp"}, "train.corrector.arch: Input should be 'linear' or 'residual_mlp'"),
    ({"corrector.ce_target": "teacher"}, "train.corrector.ce_target: Input should be 'fresh' or 'positive'"),
    ({"corrector.ce_weight": -1}, "train.corrector.ce_weight: Input should be greater than or equal to 0"),
    ({"corrector.ce_weight": True}, "train.corrector.ce_weight: Input should be a valid number"),
    ({"corrector.normalize": "yes"}, "train.corrector.normalize: Input should be a valid boolean"),
    ({"corrector.replay_steps": 0}, "train.corrector.replay_steps: Input should be greater than or equal to 1"),
    ({"corrector.updates_per_step": 0}, "train.corrector.updates_per_step: Input should be greater than or equal"),
    ({"corrector.drift_sample": -1}, "train.corrector.drift_sample: Input should be greater than or equal to 0"),
    ({"corrector.refit_epochs": 0}, "train.corrector.refit_epochs: Input should be greater than or equal to 1"),
    ({"corrector.refit_every": 5}, "train.corrector.refit_sample: must be > 0 when refit_every is set"),
    ({"negatives.fresh_overlay_steps": -1}, "train.negatives.fresh_overlay_steps: Input should be greater than"),
    (
        {"negatives.fresh_overlay_steps": 2},
        "train.negatives.fresh_overlay_steps: works without false-negative control only",
    ),
    (
        {
            "negatives.fresh_overlay_steps": 2,
            "negatives.false_negatives.relative_margin": None,
            "negatives.selection": "gumbel",
        },
        "train.negatives.fresh_overlay_steps: works with selection 'topk' only",
    ),
    (
        {"negatives.false_negatives.relative_margin": 1.5},
        "train.negatives.false_negatives.relative_margin: Input should be less than or equal to 1",
    ),
    (
        {"negatives.false_negatives.range_min": -1},
        "train.negatives.false_negatives.range_min: Input should be greater than or equal to 0",
    ),
    (
        {"negatives.false_negatives.in_batch": 1},
        "train.negatives.false_negatives.in_batch: Input should be a valid boolean",
    ),
    ({"min_positive_grade": 0}, "train.min_positive_grade: Input should be greater than or equal to 1"),
    ({"positive_grades": "best"}, "train.positive_grades: Input should be 'top' or 'all'"),
    ({"eval_every": -1}, "train.eval_every: Input should be greater than or equal to 0"),
    ({"overlap_k": "many"}, "train.overlap_k: Input should be a valid integer"),
    ({"pilot.steps": 500}, "train.pilot.steps: must be at most train.steps (100), got 500"),
    ({"pilot.candidates": [{}, {"no_such_key": 1}]}, "train.pilot.candidates.1: no train key 'no_such_key'"),
    (
        {"pilot.candidates": [{}, {"negatives.strategy": "refresh"}]},
        "train.pilot.candidates.1: negatives.refresh_every: must be > 0 for strategy 'refresh'",
    ),
    ({"pilot.candidates": [{}, 3]}, "train.pilot.candidates.1: Input should be a valid dictionary"),
    ({"pilot.candidates": "lr"}, "train.pilot.candidates: Input should be a valid list"),
    ({"pilot.steps": 0}, "train.pilot.steps: Input should be greater than or equal to 1"),
    ({"corrector.ce_weight": "1"}, "train.corrector.ce_weight: Input should be a valid number, got '1'"),
    ({"corrector.updates_per_step": 2.5}, "train.corrector.updates_per_step: Input should be a valid integer"),
    ({"overlap_k": 2.5}, "train.overlap_k: Input should be a valid integer, got 2.5"),
    ({"negatives.false_negatives.relative_margin": -0.1}, "relative_margin: Input should be greater than or equal"),
    ({"negatives.false_negatives.absolute_margin": 2}, "absolute_margin: Input should be less than or equal to 1"),
    ({"negatives.false_negatives.relative_margin": "high"}, "relative_margin: Input should be a valid number"),
]


@pytest.mark.parametrize("changes, message", TRAIN_REFUSALS)
def test_the_schema_refuses_bad_train_params(changes, message):
    sets = [f"train.{key}={json.dumps(value)}" for key, value in changes.items()]
    assert message in errors_of(lambda: load_params(PARAMS, sets=sets, environ=NO_ENV))
    train = committed()["train"]
    for key, value in changes.items():
        node, parts = train, key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    # the section on its own, as the trainer takes it, too: the same complaint
    with pytest.raises(ValidationError, match=re.escape(message.rsplit(": ", 1)[1].split(", got")[0])):
        TrainParams.model_validate(train)


def test_the_committed_train_section_is_the_default_one():
    assert TrainParams.model_validate(committed()["train"]) == Params().train


def test_orchestration_values_are_checked_like_everything_else():
    bad = {
        "orchestration.runner": "slurm",
        "orchestration.local_mode": "thread",
        "orchestration.retries": -1,
        "orchestration.num_shards": 0,
        "orchestration.dvc.push": "no",
    }
    for key, value in bad.items():
        assert errors_of(
            lambda key=key, value=value: load_params(PARAMS, environ={"FRESHEN_SET": json.dumps({key: value})})
        ).startswith(f"$FRESHEN_SET {key}: ")
    pytest.importorskip("croniter")
    assert (
        errors_of(lambda: load_params(PARAMS, sets=["orchestration.refresh_cron=every day"], environ=NO_ENV))
        == "--set orchestration.refresh_cron: not a valid cron expression: 'every day'"
    )


def test_a_plain_mapping_validates_naming_its_source():
    raw = committed()
    raw["evaluate"]["depth"] = 0
    assert (
        errors_of(lambda: validate_params(raw, "test params"))
        == "test params: evaluate.depth: Input should be greater than or equal to 1, got 0"
    )


def _freshen(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if k != "FRESHEN_SET"}
    full["PYTHONPATH"] = str(REPO / "components")
    return subprocess.run(
        [sys.executable, "-m", "freshen", *args],
        cwd=cwd,
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_freshen_params_prints_the_effective_params_with_every_override():
    res = _freshen(
        "params",
        "--set",
        "train.steps=50",
        "--set-json",
        '{"evaluate.depth": 20}',
        env={"FRESHEN_SET": '{"orchestration.num_shards": 3}'},
    )
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    expected = committed()
    expected["train"]["steps"], expected["evaluate"]["depth"], expected["orchestration"]["num_shards"] = 50, 20, 3
    assert printed == expected


def test_freshen_set_reaches_a_step_and_a_bad_override_fails_before_any_work(tmp_path):
    """$FRESHEN_SET applies to every `freshen <step>`, not only where DAGs are parsed."""
    raw = committed()
    raw["data"].update(local_dir=str(tmp_path / "none"), url=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    res = _freshen("prepare", "--root", str(tmp_path), env={"FRESHEN_SET": '{"data.nme": "x"}'})
    assert res.returncode == 2
    assert (
        res.stderr.strip() == "freshen prepare: error: $FRESHEN_SET data.nme: unknown key (see docs/params.md "
        "for the keys there are)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written, no MLflow run
    res = _freshen(
        "prepare",
        "--root",
        str(tmp_path),
        env={"FRESHEN_SET": json.dumps({"data.name": "from-env"}), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert res.returncode == 2 and "dataset 'from-env' not found" in res.stderr  # the step saw $FRESHEN_SET


def test_the_committed_reference_doc_is_the_generated_one():
    assert (REPO / "docs" / "params.md").read_text() == markdown(), (
        "docs/params.md is stale: run `python -m freshen.params --markdown > docs/params.md`"
    )


def test_every_field_has_a_description():
    def walk(model, prefix=""):
        for name, f in model.model_fields.items():
            assert f.description and len(f.description) > 5, f"{prefix}{name} has no description"
            annotation = f.annotation
            if isinstance(annotation, type) and issubclass(annotation, Section):
                walk(annotation, f"{prefix}{name}.")

    walk(Params)
    assert re.search(r"\| `train\.lr` \| `6e-05` \| Peak learning rate", markdown())
