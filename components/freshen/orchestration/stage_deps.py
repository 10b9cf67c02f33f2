"""dvc.yaml held against the code: what each stage's `freshen <verb>` imports and reads.

A DVC stage re-runs when a dep changes, so a module the step imports but dvc.yaml does not list
would let `dvc repro` keep a result the code no longer gives. For each stage whose cmd is
`freshen <verb>`, this reads the step module freshen.steps.<name> and every freshen module it
imports (transitively, imports inside functions too: see step_code) and reports:

- a module file no dep covers (the file itself, or a folder above it);
- a code dep (a path under components/) that covers no module the step imports;
- a params section the step reads (`params["train"]`, `params.get("mlflow")`) that the stage's
  `params:` lacks, unless the step reads only `params[section][key]` paths that the stage
  names as `${section.key}` in its deps or outs (DVC already re-runs when those change).

The CLI driver (freshen/cli.py: parsing, MLflow child run, seeding with `seed`) is shared by every
step and not counted.

    python -m freshen.orchestration.stage_deps        # the problems, and each stage's code deps"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import yaml

from freshen.errors import DataError
from freshen.orchestration.step_code import PACKAGE, closure, module_file, params_read

SOURCE_DIR = "components"  # where the package lives in the project, as dvc.yaml's deps name it
TEMPLATE = re.compile(r"\$\{\s*([\w.]+)\s*\}")


@dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml, templates resolved from params.yaml."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots
    params: tuple[str, ...]
    templated: frozenset[str]  # the `${a.b}` keys its deps and outs name


def _entries(items) -> list[str]:
    """Paths of a deps/outs list, whose entries are strings or one-key mappings (path: options)."""
    return [next(iter(item)) if isinstance(item, dict) else str(item) for item in items or ()]


def load_stages(dvc_yaml: Path, params_yaml: Path) -> dict[str, Stage]:
    """The stages of dvc.yaml, in order, with `${key}` templates filled in from params.yaml."""
    params = yaml.safe_load(params_yaml.read_text(encoding="utf-8")) or {}
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}

    def resolve(text: str, name: str) -> str:
        def value(match: re.Match) -> str:
            try:
                return str(reduce(lambda node, key: node[key], match.group(1).split("."), params))
            except (KeyError, TypeError):
                raise DataError(
                    dvc_yaml, f"${{{match.group(1)}}} is not in {params_yaml.name}", field=f"stages.{name}"
                ) from None

        return TEMPLATE.sub(value, text)

    out = {}
    for name, spec in stages.items():
        paths = _entries(spec.get("deps")) + [
            p for key in ("outs", "metrics", "plots") for p in _entries(spec.get(key))
        ]
        templated = frozenset(m for p in paths for m in TEMPLATE.findall(p))
        out[name] = Stage(
            name,
            str(spec.get("cmd", "")),
            tuple(resolve(p, name) for p in _entries(spec.get("deps"))),
            tuple(resolve(p, name) for key in ("outs", "metrics", "plots") for p in _entries(spec.get(key))),
            tuple(_entries(spec.get("params"))),
            templated,
        )
    return out


def stage_edges(stages: dict[str, Stage]) -> set[tuple[str, str]]:
    """(upstream, downstream) as DVC links stages: a dep at, inside or above another stage's out."""

    def related(a: str, b: str) -> bool:
        a, b = a.rstrip("/"), b.rstrip("/")
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    return {
        (up.name, down.name)
        for down in stages.values()
        for up in stages.values()
        if up is not down and any(related(d, o) for d in down.deps for o in up.outs)
    }


def _step_module(verb_cmd: str) -> str | None:
    words = verb_cmd.split()
    if len(words) != 2 or words[0] != PACKAGE:
        return None
    return f"{PACKAGE}.steps.{words[1].replace('-', '_')}"


def needed_code(project: Path, stage: Stage) -> list[str]:
    """The module files (relative to the project, as dvc.yaml names them) the stage's step imports."""
    module = _step_module(stage.cmd)
    if module is None:
        return []
    source = project / SOURCE_DIR
    return sorted(p.relative_to(project).as_posix() for p in closure(source, module))


def problems(dvc_yaml: Path, params_yaml: Path, project: Path | None = None) -> list[str]:
    """What dvc.yaml misses (or lists for nothing), one line each naming the stage and the file or section.
    `project`: the folder whose components/ holds the code (default: dvc.yaml's)."""
    project = project or dvc_yaml.parent
    out = []
    for stage in load_stages(dvc_yaml, params_yaml).values():
        module = _step_module(stage.cmd)
        if module is None:
            out.append(f"{dvc_yaml.name}: stage {stage.name}: cmd {stage.cmd!r} is not `freshen <step>`")
            continue
        if module_file(project / SOURCE_DIR, module) is None:
            out.append(f"{dvc_yaml.name}: stage {stage.name}: no module {module}")
            continue
        code = needed_code(project, stage)
        code_deps = [d.rstrip("/") for d in stage.deps if d.startswith(SOURCE_DIR + "/")]
        for file in code:
            if not any(file == d or file.startswith(d + "/") for d in code_deps):
                out.append(f"{dvc_yaml.name}: stage {stage.name}: deps lack {file} (imported by {module})")
        for dep in code_deps:
            if not any(file == dep or file.startswith(dep + "/") for file in code):
                out.append(f"{dvc_yaml.name}: stage {stage.name}: dep {dep} is code {module} does not import")
        read = params_read(project / SOURCE_DIR, module)
        for section, keys in sorted(read.items()):
            listed = section in stage.params
            if listed or (
                None not in keys
                and all(f"{section}.{k}" in stage.templated or f"{section}.{k}" in stage.params for k in keys)
            ):
                continue
            out.append(f"{dvc_yaml.name}: stage {stage.name}: params lack {section} (read by {module})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m freshen.orchestration.stage_deps",
        description="Check dvc.yaml's deps and params against what each step imports.",
    )
    parser.add_argument("--project-dir", default=".", help="folder with dvc.yaml, params.yaml and components/")
    args = parser.parse_args(argv)
    root = Path(args.project_dir).resolve()
    found = problems(root / "dvc.yaml", root / "params.yaml")
    for line in found:
        print(line)
    if found:
        print("\nthe code each stage imports:")
        for stage in load_stages(root / "dvc.yaml", root / "params.yaml").values():
            print(f"  {stage.name}:\n" + "".join(f"      - {f}\n" for f in needed_code(root, stage)), end="")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
