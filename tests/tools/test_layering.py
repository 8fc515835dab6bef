"""The package's layering (docs/architecture.md), read from the import statements themselves: no
import cycle between modules (lazy imports inside functions included), and no layer imports one
above it. A registry path in config.py is a string, not an import, and is not counted."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each sub-package's files live (pyproject.toml maps the design card's folders into kvpath).
PACKAGE_DIRS = {"kvpath": ROOT / "kvpath", "kvpath.hdl": ROOT / "hdl", "kvpath.sim": ROOT / "sim",
                "kvpath.driver": ROOT / "driver", "kvpath.boards": ROOT / "boards"}
# Layer -> what it must not import. Bottom first.
FORBIDDEN = {
    "kvpath.config": ("kvpath.golden", "kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools"),
    "kvpath.elements": ("kvpath.golden", "kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools"),
    "kvpath.packing": ("kvpath.golden", "kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools"),
    "kvpath.stimulus": ("kvpath.golden", "kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools"),
    "kvpath.scales": ("kvpath.golden", "kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools"),
    "kvpath.golden": ("kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools", "kvpath.cli"),
    "kvpath.regmap": ("kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools", "kvpath.cli"),
    "kvpath.hdl": ("kvpath.sim", "kvpath.driver", "kvpath.tools", "kvpath.cli"),
    "kvpath.driver": ("kvpath.sim", "kvpath.tools", "kvpath.cli", "kvpath.boards"),
    # A board flow takes the engine's Verilog as files and the driver's check as a callable, so what
    # runs on the board (programming, the converter) needs nothing but itself.
    "kvpath.boards": ("kvpath.golden", "kvpath.hdl", "kvpath.sim", "kvpath.driver", "kvpath.tools", "kvpath.cli"),
    "kvpath.sim": ("kvpath.tools", "kvpath.cli"),
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            # kvpath/ itself holds only the kvpath.* modules that are not mapped elsewhere.
            if package == "kvpath" and parts and f"kvpath.{parts[0]}" in PACKAGE_DIRS:
                continue
            found[name] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """kvpath modules ``path`` imports, anywhere in the file."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, name, known) for name, path in mods.items()}


def test_no_import_cycle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_layer_imports_upwards():
    bad = []
    for name, targets in graph().items():
        for layer, forbidden in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                bad += [f"{name} imports {t}" for t in targets
                        if any(t == f or t.startswith(f + ".") for f in forbidden)]
    assert not bad, "\n".join(bad)


def test_graph_sees_the_imports():
    """The checker itself: it must find imports we know exist, or the two tests above prove nothing."""
    g = graph()
    assert "kvpath.config" in g["kvpath.golden.frame"]
    assert "kvpath.hdl.lib.pipe" in g["kvpath.hdl.quant.frame"]
    assert "kvpath.hdl.quant.q4_1_bf16" in g["kvpath.hdl.quant.q4_1"]
    assert len(g) > 80
