"""The package's shape: every module in a layer, no import of a higher layer (lazy imports included), no import
circle, and no module over ~400 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "recbole_dns"

#: low to high; a module may import its own layer and the ones below
LAYERS = [
    {"errors", "defaults", "shims"},
    {"parallel", "sampling", "graph", "losses", "stats", "figures", "tables"},
    {"dns", "negatives"},
    {"models"},
    {"checkpoint", "checks", "evaluation", "diagnostics", "trainer"},
    {"config"},
    {"quick_start"},
    {"launcher"},
    {"cli", "tune", "experiments"},
]
MAX_LINES = 410


def _modules() -> dict[str, Path]:
    """``recbole_dns.x.y`` -> file, for every module but the package's face (``recbole_dns/__init__.py``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "recbole_dns":
            out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (``recbole_dns`` itself: the face)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recbole_dns")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("recbole_dns"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
    return found


def _layer(name: str) -> int:
    top = name.split(".")[1] if name.count(".") else name
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_layers.py: add it")


def test_no_module_imports_a_higher_layer_or_the_face():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            if target == "recbole_dns":
                bad.append(f"{name} imports the package's face")
            elif _layer(target) > _layer(name):
                bad.append(f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    modules = _modules()
    graph = {name: {t for t in _imports(name, path, modules) if t in modules and t != name}
             for name, path in modules.items()}
    # a package imports its own submodules (its face); a submodule importing its package's face is a circle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_checker_sees_an_upward_and_a_circular_import(tmp_path, monkeypatch):
    """The checks above can fail: a fake package with config importing cli, and a <-> b."""
    global PACKAGE
    fake = tmp_path / "recbole_dns"
    (fake / "dns").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "config.py").write_text("def f():\n    from recbole_dns.cli import main\n")
    (fake / "cli.py").write_text("")
    (fake / "dns" / "__init__.py").write_text("from recbole_dns.dns.pool import x\n")
    (fake / "dns" / "pool.py").write_text("from recbole_dns.dns import y\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake, raising=False)
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    import pytest

    with pytest.raises(AssertionError, match="recbole_dns.config .* imports recbole_dns.cli"):
        test_no_module_imports_a_higher_layer_or_the_face()
    with pytest.raises(AssertionError, match="import circle"):
        test_no_import_circle()
