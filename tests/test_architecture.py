"""docs/architecture.md's import table is what the package imports at module level, and those
imports run one way: no unit of `freshen` imports, at module level, a unit that imports it back;
and no module is over 300 lines."""

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "components" / "freshen"
DOC = REPO / "docs" / "architecture.md"
BOTTOM = ("integrity", "locks", "atomic", "jsonfile", "errors", "progress")  # the table leaves them out
SPLIT = ("orchestration.pipeline",)  # a module the table shows apart from its package
ROW = re.compile(r"^\| `([\w.]+)` \| (.*) \|$", re.MULTILINE)


def unit(module: str) -> str:
    """The table's unit of a dotted module under `freshen`: its package or top-level module."""
    parts = module.split(".")
    dotted = ".".join(parts[1:3])
    return dotted if dotted in SPLIT else parts[1]


def module_level_imports(path: Path) -> set[str]:
    """The `freshen.*` modules `path` imports outside any function or class."""
    out = set()
    for statement in ast.parse(path.read_text()).body:
        for node in ast.walk(statement) if isinstance(statement, (ast.If, ast.Try)) else [statement]:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("freshen"):
                if node.module == "freshen":
                    out |= {f"freshen.{alias.name}" for alias in node.names}
                else:
                    out.add(node.module)
            elif isinstance(node, ast.Import):
                out |= {alias.name for alias in node.names if alias.name.startswith("freshen.")}
    return {m for m in out if m.count(".") >= 1}


def import_graph() -> dict[str, set[str]]:
    """unit -> the units it imports at module level (its own aside)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("freshen", *path.relative_to(PACKAGE).with_suffix("").parts))
        if name in ("freshen.__init__", "freshen.__main__"):
            continue
        me = unit(name.removesuffix(".__init__"))
        graph.setdefault(me, set()).update(unit(m) for m in module_level_imports(path) if unit(m) != me)
    return graph


def table(graph: dict[str, set[str]]) -> str:
    lines = ["| unit | imports at module level (the bottom layer aside) |", "| --- | --- |"]
    for me in sorted(u for u in graph if u not in BOTTOM):
        above = sorted(graph[me] - set(BOTTOM))
        lines.append(f"| `{me}` | {', '.join(f'`{u}`' for u in above) or '(the bottom layer only)'} |")
    return "\n".join(lines)


def documented() -> dict[str, str]:
    section = DOC.read_text().split("## Which way imports run", 1)[1].split("\n## ", 1)[0]
    return dict(ROW.findall(section))


def test_the_graph_is_read_from_module_level_imports_only(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from freshen.cache import X\nimport freshen.steps.train\nfrom freshen import plots, params\n"
        "try:\n    from freshen.data import beir\nexcept ImportError:\n    pass\n"
        "def f():\n    from freshen.cli import main\n"
    )
    assert module_level_imports(source) == {
        "freshen.cache",
        "freshen.steps.train",
        "freshen.plots",
        "freshen.params",
        "freshen.data",
    }
    assert unit("freshen.orchestration.pipeline") == "orchestration.pipeline"
    assert unit("freshen.orchestration.config") == "orchestration"


def test_the_documented_import_table_is_the_code_s():
    graph = import_graph()
    expected = {row[0]: row[1] for row in ROW.findall(table(graph))}
    assert documented() == expected, f"docs/architecture.md, 'Which way imports run', should read:\n{table(graph)}"


def test_the_bottom_layer_imports_only_itself():
    graph = import_graph()
    assert {me: graph[me] - set(BOTTOM) for me in BOTTOM if graph.get(me, set()) - set(BOTTOM)} == {}


def test_module_level_imports_have_no_cycle():
    try:
        order = list(TopologicalSorter(import_graph()).static_order())
    except CycleError as e:
        pytest.fail(f"module-level imports go round: {' -> '.join(e.args[1])}")
    assert order.index("errors") < order.index("steps") < order.index("cli")


def test_no_module_is_over_300_lines():
    """docs/architecture.md, 'Style': a module a newcomer reads in one sitting."""
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
