"""The layers stay layered: read from the code's own imports (ast), every import counted, also
those inside functions and through ``__import__`` / ``importlib.import_module``.

- ``engines`` never imports ``scanner`` (training and calibration receive crops as iterators);
- no import cycle between project modules (a package importing its own submodules is not one);
- no module imports another module's private ``_name``;
- no module over 400 lines, no folder with more than 12 modules directly inside;
- reading a model's config needs no torch.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scanner", "engines")


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (root / top).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, str | None]]:
    """``(module imported, name taken from it or None)`` for every import in the module."""
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.append((full, None) if full in known else (base, a.name))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "id", None) == "__import__"
                   or getattr(node.func, "attr", None) == "import_module")):
            found.append((node.args[0].value, None))
    resolved = []
    for target, taken in found:
        while target and target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != name:
            resolved.append((target, taken))
    return resolved


def graph(root: Path = ROOT):
    known = modules(root)
    return known, {m: imports(m, p, known) for m, p in known.items()}


def cycles(edges: dict[str, list[tuple[str, str | None]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    def related(a, b):  # a package and its own submodules
        return a.startswith(b + ".") or b.startswith(a + ".")

    g = {a: {b for b, _ in bs if not related(a, b)} for a, bs in edges.items()}
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_engines_never_import_scanner():
    _, edges = graph()
    up = [f"{a} -> {b}" for a, bs in edges.items() for b, _ in bs
          if a.startswith("engines") and b.startswith("scanner")]
    assert not up, up


def test_no_import_cycles():
    _, edges = graph()
    assert not cycles(edges)


def test_no_private_names_cross_modules():
    known, edges = graph()
    private = [f"{a} takes {taken} from {b}" for a, bs in edges.items() for b, taken in bs
               if taken and taken.startswith("_") and not taken.startswith("__") and f"{b}.{taken}" not in known]
    assert not private, private


def test_modules_and_folders_stay_small():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in modules().values()
            if (n := len(p.read_text().splitlines())) > 400]
    crowded = [f"{d.relative_to(ROOT)}: {n} modules" for top in PACKAGES
               for d in [ROOT / top, *(q for q in (ROOT / top).rglob("*") if q.is_dir())]
               if (n := len([f for f in d.glob("*.py") if f.name != "__init__.py"])) > 12]
    assert not long and not crowded, long + crowded


def test_the_checks_see_what_they_claim(tmp_path):
    """The checks find a planted cycle, an upward import and a private-name import."""
    for top in PACKAGES:
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "engines" / "a.py").write_text("def f():\n    from scanner.b import _secret\n")
    (tmp_path / "scanner" / "b.py").write_text("import engines.a\n_secret = 1\n")
    known, edges = graph(tmp_path)
    assert ("scanner.b", "_secret") in edges["engines.a"]
    assert cycles(edges) == [["engines.a", "scanner.b"]]


def test_reading_a_model_config_needs_no_torch(tmp_path):
    """What ONNX and TensorRT engines need to read their config, without torch."""
    code = ("import sys, json; from engines.config import ModelConfig; "
            "from engines.files import read_settings, write_atomic; import engines.backends._registry; "
            "c = ModelConfig.from_dict(json.loads(json.dumps(ModelConfig(arch='x').to_dict()))); "
            "print(c.arch, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["x", "False"]
