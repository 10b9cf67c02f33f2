"""What a step's code imports and which params sections it reads, found by reading the source
(nothing is imported, so this needs neither torch nor the other heavy dependencies).

- `closure`: a module and every freshen module it imports, transitively, imports inside functions
  included; `from pkg import mod` counts mod, and parent packages' __init__.py are not counted;
- `params_read`: the `params.section` (typed) / `params["section"]` / `params.get("section")` reads in the code a step's
  `run` and `skip_reason` reach (their module-level code, the functions and classes they name,
  transitively, across freshen modules); `params` is what every step calls its params."""

from __future__ import annotations

import ast
import functools
from functools import cache
from pathlib import Path

PACKAGE = "freshen"
PARAMS_NAME = "params"
ENTRY = ("run", "skip_reason")  # what the CLI calls in a step module


def module_file(source: Path, module: str) -> Path | None:
    """The file of a freshen module under `source` (components/), or None when there is none."""
    base = source.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(source: Path, file: Path) -> str:
    """The package a module file is in (the package itself for an __init__.py)."""
    module = ".".join(file.relative_to(source).with_suffix("").parts)
    return module if file.name == "__init__.py" else module.rpartition(".")[0]


def _from_base(source: Path, file: Path, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    parts = _package_of(source, file).split(".")
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def _imports(source: Path, file: Path) -> set[str]:
    """The freshen modules `file` imports anywhere in it (`from pkg import mod` names mod)."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(source, file, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(source, sub) else base)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def closure(source: Path, module: str) -> set[Path]:
    """`module`'s file and those of every freshen module it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        file = module_file(source, todo.pop())
        if file is None or file in seen:
            continue
        seen.add(file)
        todo.extend(_imports(source, file))
    return seen


@cache
def _names(source: Path, file: Path) -> tuple[dict[str, ast.AST], list[ast.stmt], dict[str, tuple[str, str | None]]]:
    """A module's top-level functions and classes by name, its other top-level statements, and
    what each name it imports (anywhere) stands for: (module, None) or (module, attribute)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    other = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    imported: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0],
                    None,
                )
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imported[alias.asname or alias.name] = (_from_base(source, file, node), alias.name)
    return defs, other, imported


def params_read(source: Path, module: str, entry: tuple[str, ...] = ENTRY) -> dict[str, set]:
    """section -> the keys read under it as `params[section][key]` (None: the section used whole:
    bound to a name, passed on, `params.get(section)`), in the code `entry` of `module` reaches:
    its module-level statements, those functions, and every freshen function or class they name,
    transitively (a class counts whole)."""
    read: dict[str, set] = {}
    start = module_file(source, module)
    todo: list[tuple[Path, str | None]] = [(start, None)] + [(start, name) for name in entry]
    seen: set[tuple[Path, str | None]] = set()
    while todo:
        file, name = todo.pop()
        if (file, name) in seen:
            continue
        seen.add((file, name))
        defs, other, imported = _names(source, file)
        if name is not None and name not in defs:
            continue
        nodes = other if name is None else [defs[name]]
        parents = {child: n for top in nodes for n in ast.walk(top) for child in ast.iter_child_nodes(n)}
        for node in (n for top in nodes for n in ast.walk(top)):
            section = _section_of(node)
            if section is not None:
                outer = parents.get(node)
                if isinstance(outer, ast.Subscript) and outer.value is node:
                    key = _constant(outer.slice)
                elif isinstance(outer, ast.Attribute) and outer.value is node:
                    key = outer.attr
                else:
                    key = None
                read.setdefault(section, set()).add(key)
            elif isinstance(node, ast.Name) and node.id in defs:
                todo.append((file, node.id))
            elif isinstance(node, ast.Name) and node.id in imported:
                target, attr = imported[node.id]
                target_file = module_file(source, target) if target.startswith(PACKAGE) else None
                if target_file is not None and attr is not None and module_file(source, f"{target}.{attr}") is None:
                    todo.append((target_file, attr))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported:
                target, attr = imported[node.value.id]
                full = f"{target}.{attr}" if attr else target
                target_file = module_file(source, full) if full.startswith(PACKAGE) else None
                if target_file is not None:
                    todo.append((target_file, node.attr))
    return read


@functools.cache
def _sections() -> frozenset[str]:
    """The params sections' names (asked for every node walked: computed once)."""
    from freshen.params import Params

    return frozenset(Params.model_fields)


def _constant(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _section_of(node) -> str | None:
    """The section in `params.x` (typed params), `params["x"]` or `params.get("x", ...)`, else None."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == PARAMS_NAME
        and node.attr in _sections()
    ):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == PARAMS_NAME:
        return _constant(node.slice)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == PARAMS_NAME
        and node.args
    ):
        return _constant(node.args[0])
    return None
