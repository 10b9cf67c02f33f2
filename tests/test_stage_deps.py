"""dvc.yaml's deps and params cover what each stage's step imports and reads, and the check that
says so reports exactly what a copy of dvc.yaml lacks."""

import textwrap
from pathlib import Path

import pytest
import yaml
from freshen.orchestration import stage_deps
from freshen.orchestration.stage_deps import needed_code, problems
from freshen.orchestration.step_code import closure, params_read

REPO = Path(__file__).resolve().parents[1]


def dvc_copy(tmp_path, edit) -> Path:
    """dvc.yaml with `edit(stages)` applied, written to tmp_path (the code stays in the repository)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    edit(spec["stages"])
    out = tmp_path / "dvc.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def check(dvc_yaml: Path) -> list[str]:
    return problems(dvc_yaml, REPO / "params.yaml", REPO)


def test_dvc_yaml_lists_every_module_and_params_section_each_stage_reads():
    assert problems(REPO / "dvc.yaml", REPO / "params.yaml") == []


def test_the_stages_depend_on_the_modules_they_were_missing():
    """What dvc.yaml once lacked: the checks below would fail again if it did."""
    stages = stage_deps.load_stages(REPO / "dvc.yaml", REPO / "params.yaml")
    code = {name: set(needed_code(REPO, stage)) for name, stage in stages.items()}
    assert {
        "components/freshen/encoding.py",
        "components/freshen/retrieval.py",
        "components/freshen/cache.py",
        "components/freshen/training/loop.py",
    } <= code["train"]
    assert "components/freshen/steps/prepare.py" in code["prepare"]
    assert {
        "components/freshen/modeling/encoder.py",
        "components/freshen/encoding.py",
        "components/freshen/embed_corpus.py",
    } <= code["evaluate"]
    assert "encode" in stages["train"].params


def test_a_removed_code_dep_is_reported_exactly(tmp_path):
    def drop(stages):
        stages["train"]["deps"].remove("components/freshen/encoding.py")

    assert check(dvc_copy(tmp_path, drop)) == [
        "dvc.yaml: stage train: deps lack components/freshen/encoding.py (imported by freshen.steps.train)"
    ]


def test_a_removed_folder_dep_reports_each_module_in_it(tmp_path):
    def drop(stages):
        stages["train"]["deps"].remove("components/freshen/sampling")

    found = check(dvc_copy(tmp_path, drop))
    files = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "components/freshen/sampling").glob("[!_]*.py"))
    assert found == [f"dvc.yaml: stage train: deps lack {f} (imported by freshen.steps.train)" for f in files]


def test_a_code_dep_the_step_does_not_import_is_reported(tmp_path):
    def add(stages):
        stages["prepare"]["deps"].append("components/freshen/training")

    assert check(dvc_copy(tmp_path, add)) == [
        "dvc.yaml: stage prepare: dep components/freshen/training is code freshen.steps.prepare does not import"
    ]


def test_a_removed_params_section_is_reported(tmp_path):
    def drop(stages):
        stages["evaluate"]["params"].remove("encode")

    assert check(dvc_copy(tmp_path, drop)) == [
        "dvc.yaml: stage evaluate: params lack encode (read by freshen.steps.evaluate)"
    ]


def test_a_path_read_from_params_is_covered_by_its_templated_dep(tmp_path):
    """promote reads cache.out_dir (the cache manifests eval.json measured): the ${cache.out_dir} dep covers it."""

    def drop(stages):
        stages["promote"]["deps"].remove("${cache.out_dir}")

    assert check(dvc_copy(tmp_path, drop)) == [
        "dvc.yaml: stage promote: params lack cache (read by freshen.steps.promote)"
    ]


def fake_package(tmp_path) -> Path:
    """components/freshen/ with a step that reaches helpers through every kind of import."""
    files = {
        "__init__.py": "",
        "errors.py": "",
        "steps/__init__.py": "",
        "steps/demo.py": """
            from freshen.helpers import used
            from . import sibling

            def run(params, root, log):
                from freshen import late  # inside a function: still a dep
                used(params)
                return sibling.helper(params) + late.x(params["demo"]["out"])
            """,
        "steps/sibling.py": """
            from freshen.errors import *

            def helper(params):
                return params.get("mlflow", {})
            """,
        "helpers.py": """
            def used(params):
                p = params["train"]
                return _inner(params), p

            def _inner(params):
                return params["seed"]

            def unused(params):
                return params["cluster"]
            """,
        "late.py": "def x(v):\n    return v\n",
        "unimported.py": "import freshen.helpers\n",
    }
    for rel, text in files.items():
        path = tmp_path / "components/freshen" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path / "components"


def test_imports_are_followed_transitively_and_inside_functions(tmp_path):
    source = fake_package(tmp_path)
    found = {p.relative_to(source).as_posix() for p in closure(source, "freshen.steps.demo")}
    assert found == {
        "freshen/steps/demo.py",
        "freshen/steps/sibling.py",
        "freshen/helpers.py",
        "freshen/late.py",
        "freshen/errors.py",
    }  # parent packages (freshen/__init__.py) are not counted


def test_params_sections_read_are_those_the_entry_reaches(tmp_path):
    source = fake_package(tmp_path)
    read = params_read(source, "freshen.steps.demo")
    # helpers.unused is never called: its `cluster` does not count
    assert read == {"train": {None}, "seed": {None}, "mlflow": {None}, "demo": {"out"}}


@pytest.mark.parametrize("cmd", ["python train.py", "freshen no-such-step"])
def test_a_stage_that_runs_no_step_is_reported(tmp_path, cmd):
    def edit(stages):
        stages["prepare"]["cmd"] = cmd

    found = check(dvc_copy(tmp_path, edit))
    assert len(found) == 1 and found[0].startswith("dvc.yaml: stage prepare:")


def test_the_command_prints_what_each_stage_needs(tmp_path, capsys):
    def drop(stages):
        stages["reembed"]["deps"].remove("components/freshen/steps/embed_cache.py")

    project = tmp_path / "proj"
    project.mkdir()
    dvc_copy(project, drop)
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (project / "components").symlink_to(REPO / "components")
    assert stage_deps.main(["--project-dir", str(project)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "dvc.yaml: stage reembed: deps lack components/freshen/steps/embed_cache.py (imported by freshen.steps.reembed)"
    )
    assert "  reembed:\n" in out and "      - components/freshen/steps/embed_cache.py\n" in out
    assert stage_deps.main(["--project-dir", str(REPO)]) == 0
