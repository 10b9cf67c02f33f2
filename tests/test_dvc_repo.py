"""The project's DVC repository, for real (git + DVC in temporary folders): a clone whose
default remote folder is missing is told so before `dvc pull` (issue 26 defect 3), and what the
Airflow DAGs write coexists with DVC (defect 9): version_cache stages nothing in git, and a train
run's outputs written in place are recorded in dvc.lock (`dvc status` clean) unless the run
overrode params that dvc.yaml's stages read."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from freshen import dvc_repo
from freshen.errors import FreshenError
from freshen.params import validate_params
from freshen.steps import version_cache

DVC = (sys.executable, "-m", "dvc")


def sh(cwd, *cmd):
    res = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def git_dvc_repo(root: Path, autostage: bool = True) -> Path:
    """A git + DVC repository with the project's .dvc/config settings (remote `local` at
    ../freshen-dvc-remote, beside the repository; core.autostage)."""
    root.mkdir(parents=True)
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "t@example.com")
    sh(root, "git", "config", "user.name", "t")
    sh(root, *DVC, "init", "-q")
    (root / ".dvc/config").write_text(
        f"[core]\n    remote = local\n    autostage = {str(autostage).lower()}\n"
        "['remote \"local\"']\n    url = ../../freshen-dvc-remote\n"
    )
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "init")
    return root


def staged(root: Path) -> list[str]:
    return sh(root, "git", "diff", "--cached", "--name-only").split()


def test_a_clone_whose_remote_folder_is_missing_is_told_how_to_set_it(tmp_path):
    origin = git_dvc_repo(tmp_path / "one" / "freshen")
    remote = tmp_path / "one" / "freshen-dvc-remote"
    remote.mkdir()
    (origin / "data.txt").write_text("tracked\n")
    sh(origin, *DVC, "add", "-q", "data.txt")
    sh(origin, *DVC, "push", "-q")
    sh(origin, "git", "add", "-A")
    sh(origin, "git", "commit", "-qm", "data")
    assert dvc_repo.check_remote(origin) == str(remote)

    clone = tmp_path / "two" / "freshen"  # under another parent folder: no remote beside it
    sh(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    with pytest.raises(FreshenError) as err:
        dvc_repo.check_remote(clone)
    msg = str(err.value)
    assert msg.startswith(f"{clone / '.dvc/config'}: field 'remote \"local\".url': ")
    assert f"the folder {tmp_path / 'two' / 'freshen-dvc-remote'}, which does not exist" in msg
    assert "dvc remote modify --local local url /path/to/remote" in msg and "\n" not in msg
    cli = subprocess.run(
        [sys.executable, "-m", "freshen.dvc_repo", "check-remote", "--root", str(clone)], capture_output=True, text=True
    )
    assert cli.returncode == 2 and cli.stderr.strip() == f"freshen: error: {msg}"

    # doing what it says: the clone's own setting (.dvc/config.local), then dvc pull works
    sh(clone, *DVC, "remote", "modify", "--local", "local", "url", str(remote))
    assert dvc_repo.check_remote(clone) == str(remote)
    sh(clone, *DVC, "pull", "-q")
    assert (clone / "data.txt").read_text() == "tracked\n"
    assert sh(clone, "git", "status", "--porcelain") == ""  # config.local is git-ignored


def test_version_cache_stages_nothing_in_git_even_with_autostage(tmp_path, tiny_params):
    root = git_dvc_repo(tmp_path / "proj", autostage=True)
    params = validate_params(tiny_params)
    refreshed = root / params.orchestration.refresh_dir
    refreshed.mkdir(parents=True)
    (refreshed / "embeddings.npy").write_bytes(b"rows")
    info = version_cache.run(params, root)
    dvc_file = root / info["dvc_file"]
    assert yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"] == info["md5"]
    assert staged(root) == []  # the user's index is left as it was
    status = sh(root, "git", "status", "--porcelain", "--untracked-files=all").splitlines()
    assert f"?? {info['dvc_file']}" in status  # to be committed by the user, who decides
    assert "Data and pipelines are up to date" in sh(root, *DVC, "status")


STAGE = """\
stages:
  double:
    cmd: python double.py
    deps: [double.py, input.txt]
    params: [train.factor]
    outs: [out]
"""
DOUBLE = """\
from pathlib import Path
import yaml
factor = yaml.safe_load(open("params.yaml"))["train"]["factor"]
Path("out").mkdir(exist_ok=True)
Path("out/result.txt").write_text(str(factor * int(Path("input.txt").read_text())))
"""


def test_outputs_written_in_place_are_recorded_so_dvc_status_is_clean(tmp_path):
    root = git_dvc_repo(tmp_path / "proj", autostage=True)
    (root / "dvc.yaml").write_text(STAGE)
    (root / "double.py").write_text(DOUBLE)
    (root / "params.yaml").write_text("train:\n  factor: 2\n")
    (root / "input.txt").write_text("3")
    sh(root, *DVC, "repro", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "repro")

    # what an Airflow run does: the stage's command, run outside DVC, on a changed input
    (root / "input.txt").write_text("5")
    sh(root, sys.executable, "double.py")
    assert "changed" in sh(root, *DVC, "status")

    # a run with overrides of stage params made an experiment: left unrecorded, and it says why
    reason = dvc_repo.why_not_recorded(root, {"train.steps": 5, "orchestration.num_shards": 3})
    assert reason.startswith("this run overrides train.steps, which params.yaml does not say")
    assert dvc_repo.why_not_recorded(root, {}, enabled=False) == "orchestration.dvc.enabled is false"
    assert "no DVC pipeline" in dvc_repo.why_not_recorded(tmp_path, {})
    # a run of params.yaml as it is (deployment settings aside): recorded as `dvc repro` would
    assert dvc_repo.why_not_recorded(root, {"orchestration.num_shards": 3}) is None
    assert dvc_repo.commit_outputs(root, ["double"]) == ["double"]
    assert "Data and pipelines are up to date" in sh(root, *DVC, "status")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["double"]
    assert {d["path"] for d in lock["deps"]} == {"double.py", "input.txt"}
    assert (root / "out/result.txt").read_text() == "10"
    assert staged(root) == []  # dvc.lock changed in the working tree only
    assert " M dvc.lock" in sh(root, "git", "status", "--porcelain").splitlines()
    # and the recorded version is the one DVC restores
    (root / "out/result.txt").write_text("garbage")
    sh(root, *DVC, "checkout", "-q", "--force")
    assert (root / "out/result.txt").read_text() == "10"
