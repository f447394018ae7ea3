"The package's shape: imports point one way (no cycle, lazy imports included) and no private name crosses a module."
import ast, io
from pathlib import Path

from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

import medsft

PKG = Path(medsft.__file__).parent


def imports_of(path: Path) -> list:
    "(module, name) pairs for every `from .m import n` / `from medsft.m import n` in `path`, function bodies too."
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom): continue
        mod = node.module or ""
        if node.level == 1: pass
        elif mod == "medsft" or mod.startswith("medsft."): mod = mod[len("medsft"):].lstrip(".")
        else: continue
        for a in node.names:
            out.append((mod.split(".")[0], a.name) if mod else (a.name, None))  # `from . import speed`
    return out


def graph() -> dict:
    return {p.stem: {m for m, _ in imports_of(p) if m and m != p.stem}
            for p in PKG.glob("*.py") if p.stem not in ("__init__", "_modidx")}


def find_cycle(g: dict):
    "A list of modules that import each other in a ring, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = "open"; stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open": return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = "done"; stack.pop()
    for m in sorted(g):
        if m not in state and (c := visit(m)): return c


def test_no_import_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_cycle_check_can_fail():
    g = graph()
    g["files"] = g["files"] | {"evaluation"}  # a bottom module importing the top one
    assert find_cycle(g) is not None


def test_no_private_name_crosses_a_module():
    crossing = [f"{p.stem} imports {n} from {m}" for p in PKG.glob("*.py") for m, n in imports_of(p)
                if n and n.startswith("_") and m != p.stem]
    assert not crossing, crossing


def test_the_rooms_are_below_their_users():
    g = graph()
    assert g["files"] == set() or g["files"] <= {"cli"}, g["files"]  # the bottom
    assert g["chat"] <= {"files"}, g["chat"]
    assert "evaluation" not in g["inference"] | g["multiple_choice"]  # evaluation sits above both


def test_every_name_a_module_uses_is_defined_there():
    "pyflakes: no undefined name (one imported only by a notebook cell fails outside it), no unused import."
    out = io.StringIO()
    files = [p for p in sorted(PKG.glob("*.py")) if p.name != "_modidx.py"]
    n = sum(checkPath(str(p), Reporter(out, out)) for p in files)
    assert n == 0, out.getvalue()
