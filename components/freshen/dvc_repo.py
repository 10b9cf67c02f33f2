"""The project's DVC repository as the pipeline's tools use it, through DVC's Python API.

- `check_remote`: the default remote, when it is a folder, exists. A clone under another parent
  folder than the repository it came from has no `../freshen-dvc-remote` beside it, and
  `dvc pull` then says "Everything is up to date" before failing on missing files: this says why.
  `python -m freshen.dvc_repo check-remote` (what scripts/pull.sh runs before `dvc pull`).
- `add`: `dvc add` of a folder without staging anything in git, whatever `core.autostage` says:
  a task of a DAG must not leave staged changes in the user's checkout.
- `commit_outputs` / `why_not_recorded`: the outputs an Airflow run of the train pipeline wrote in
  place (the same `freshen <step>` commands as dvc.yaml's stages) recorded in dvc.lock, as
  `dvc repro` would have, so `dvc status` is clean after the run; refused for a run whose
  overrides make its outputs something params.yaml does not give."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from pathlib import Path

from freshen.errors import FreshenError

# params.yaml sections no dvc.yaml stage reads: a run overriding only these made what dvc.yaml gives
NOT_STAGE_PARAMS = ("orchestration",)


@contextlib.contextmanager
def open_repo(root: Path, autostage: bool | None = None):
    """The DVC repository at `root`, with the working directory there meanwhile (as the `dvc`
    command has it: DVC reads paths and stage folders from it); with `autostage` given,
    core.autostage for this handle only."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    config = None if autostage is None else {"core": {"autostage": autostage}}
    before = os.getcwd()
    try:
        os.chdir(root)
        with Repo(str(root), config=config) as repo:
            yield repo
    except NotDvcRepoError:
        raise FreshenError(f"{root}: not a DVC repository (run `dvc init`)") from None
    finally:
        os.chdir(before)


def default_remote(root: Path) -> tuple[str, str, str] | None:
    """(name, url, config file that sets the url) of the default remote; None when there is none.
    DVC gives a folder remote's url as an absolute path, resolved from the config file's folder."""
    with open_repo(root) as repo:
        name = repo.config["core"].get("remote")
        if not name:
            return None
        url = repo.config["remote"].get(name, {}).get("url", "")
        where = ".dvc/config"
        for level, shown in (("local", ".dvc/config.local"), ("repo", ".dvc/config")):
            if repo.config.load_one(level).get("remote", {}).get(name, {}).get("url"):
                where = shown
                break
    return name, url, where


def is_folder(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def check_remote(root: Path) -> str:
    """The default remote's url when it is usable; FreshenError naming the config file, the field
    and the commands that fix it when it is a folder that does not exist."""
    found = default_remote(root)
    if found is None:
        raise FreshenError(
            f"{root / '.dvc/config'}: field 'core.remote': no default DVC remote; "
            "add one: dvc remote add -d NAME URL (a folder, s3://..., see docs/pipeline.md)"
        )
    name, url, where = found
    folder = Path(url.removeprefix("file://"))
    if is_folder(url) and not folder.is_dir():
        raise FreshenError(
            f"{root / where}: field 'remote \"{name}\".url': the default DVC remote is the folder {folder}, "
            f"which does not exist (a relative url is read from .dvc/, so it moves with the clone); "
            f"point this clone at the remote: dvc remote modify --local {name} url /path/to/remote "
            f"(or create an empty one: mkdir -p {folder})"
        )
    return url


def add(root: Path, target: Path, push: bool = False) -> Path:
    """`dvc add target` (and `dvc push` of it), staging nothing in git; returns the .dvc file."""
    from dvc.exceptions import DvcException

    rel = target.resolve().relative_to(root.resolve()).as_posix()
    try:
        with open_repo(root, autostage=False) as repo:
            repo.add(rel)
            if push:
                repo.push(targets=[f"{rel}.dvc"])
    except DvcException as exc:
        raise FreshenError(f"`dvc {'add' + (' + push' if push else '')} {rel}` failed in {root}: {exc}") from None
    return root / f"{rel}.dvc"


def why_not_recorded(root: Path, overrides: dict, enabled: bool = True) -> str | None:
    """Why a train run's outputs cannot be recorded in dvc.lock; None when they can: a DVC project
    with a dvc.yaml, DVC versioning on, and no override of a key any stage reads."""
    if not enabled:
        return "orchestration.dvc.enabled is false"
    if importlib.util.find_spec("dvc") is None:
        return "DVC is not installed where this task runs (pip install dvc, as in requirements/constraints.txt)"
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return f"{root} has no DVC pipeline (.dvc/ and dvc.yaml): nothing to record"
    changed = sorted(k for k in overrides if k.split(".")[0] not in NOT_STAGE_PARAMS)
    if changed:
        return (
            f"this run overrides {', '.join(changed)}, which params.yaml does not say: its outputs are an "
            "experiment, not what dvc.yaml gives, so dvc.lock keeps the recorded ones (`dvc status` shows "
            "the stages changed; `dvc checkout` restores the recorded outputs, `dvc repro` remakes them)"
        )
    return None


def commit_outputs(root: Path, stages: list[str]) -> list[str]:
    """`dvc commit --force` of `stages`: their deps, params and outputs as they are now go into
    dvc.lock and the outputs into the DVC cache (nothing is staged in git). Returns the stages."""
    from dvc.exceptions import DvcException

    try:
        with open_repo(root, autostage=False) as repo:
            for stage in stages:
                repo.commit(stage, force=True)
    except DvcException as exc:
        raise FreshenError(f"`dvc commit` of the train stages failed in {root}: {exc}") from None
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freshen.dvc_repo", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check-remote"])
    parser.add_argument("--root", default=".", help="the project (default: here)")
    args = parser.parse_args(argv)
    try:
        url = check_remote(Path(args.root).resolve())
    except FreshenError as exc:
        print(f"freshen: error: {exc}", file=sys.stderr)
        return 2
    print(f"DVC remote: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
