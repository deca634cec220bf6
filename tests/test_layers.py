"""The import graph of src/wiregate: no cycles, and the product never imports the test helpers.

Every `import` and `from ... import` of every module counts, wherever it is written: at the top, inside a function
(a lazy import is still a dependency) and under `if TYPE_CHECKING:` (a type-only cycle is still a child that knows
its parent). A child reports to its parent through a callback, a return value or an interface in a lower module
(e.g. relay/host.py), never by importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wiregate

SRC = Path(wiregate.__file__).resolve().parent
# Test helpers and benchmarks may import anything; the product (everything else) must not import wiregate.testing.
NOT_PRODUCT = ("wiregate.testing", "wiregate.bench")


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def imports(name: str, path: Path, is_pkg: bool, known: dict) -> set[str]:
    """The wiregate modules `name` imports: `from a.b import c` counts as a.b.c when that is a module, else a.b."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b.c` runs a.b.c; count the deepest module of ours it names
                parts = alias.name.split(".")
                target = next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                               if ".".join(parts[:i]) in known), None)
                if target is not None:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in known:
                    out.add(f"{module}.{alias.name}")
                elif module in known:
                    out.add(module)
    out.discard(name)
    return out


def graph(root: Path = SRC) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, is_pkg, known) for name, (path, is_pkg) in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): each is one or more cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_every_kind_of_import(tmp_path):
    """The checker itself: top-level, relative, in-function and TYPE_CHECKING imports all make edges."""
    pkg = tmp_path / "wiregate"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "parent.py").write_text("from wiregate.a.child import Child\n")
    (pkg / "a" / "child.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .parent import Parent\n")
    (pkg / "a" / "lazy.py").write_text("def f():\n    import wiregate.a.other\n")
    (pkg / "a" / "other.py").write_text("from wiregate.a import lazy\n")
    (pkg / "b.py").write_text("import wiregate.testing.netns\n")
    (pkg / "testing").mkdir()
    (pkg / "testing" / "__init__.py").write_text("")
    (pkg / "testing" / "netns.py").write_text("")
    g = graph(pkg)
    assert g["wiregate.a.child"] == {"wiregate.a.parent"}
    assert g["wiregate.a.lazy"] == {"wiregate.a.other"}
    assert g["wiregate.b"] == {"wiregate.testing.netns"}
    assert sorted(cycles(g)) == [["wiregate.a.child", "wiregate.a.parent"], ["wiregate.a.lazy", "wiregate.a.other"]]
    assert product_imports_of_testing(g) == ["wiregate.b imports wiregate.testing.netns"]


def product_imports_of_testing(g: dict[str, set[str]]) -> list[str]:
    return [f"{name} imports {dep}" for name, deps in sorted(g.items()) for dep in sorted(deps)
            if not any(_in(name, p) for p in NOT_PRODUCT) and _in(dep, "wiregate.testing")]


def test_src_wiregate_has_no_import_cycle():
    g = graph()
    found = cycles(g)
    assert not found, "import cycles (a child must not import its parent):\n" + "\n".join(
        f"  {name} -> {', '.join(sorted(g[name] & set(comp)))}" for comp in found for name in comp)


def test_product_code_does_not_import_the_test_helpers():
    bad = product_imports_of_testing(graph())
    assert not bad, "product code imports wiregate.testing (only tests and benchmarks may):\n" + "\n".join(bad)
