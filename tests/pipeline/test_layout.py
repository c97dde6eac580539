"""One layout: :mod:`pipeline.layout` names every path under a work folder ``W``; nothing else does.

The AST walk below fails on any path built from a string literal outside ``pipeline/layout.py``:
``<expr> / "name"``, ``<expr> / f"..."``, ``Path("...")`` (and its Pure/Posix cousins),
``.joinpath("...")``, ``os.path.join(..., "...")``, and any string literal that spells a path under
``W`` (``"cache/preprocess/..."``, ``".scanlens/lock"``). Modules whose paths are *not* under ``W``
are listed in :data:`ALLOWED` with the reason; keep that list small.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import re
from pathlib import Path

from pipeline import layout
from pipeline.layout import Workdir

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "assets")
LAYOUT_MODULE = "pipeline/layout.py"

#: (module, reason): modules that build paths outside any work folder, so they may use literals.
ALLOWED: dict[str, str] = {
    "pipeline/io/medmnist.py": "writes a demo *source* folder (patient/study DICOM tree, labels.csv) that ingest reads",
    "pipeline/demo.py": "prepares the demo source and inbox folders, which ingest and scoring read",
    "pipeline/models/weights.py": "torch hub's checkpoint cache under $TORCH_HOME",
    "assets/resources.py": "where W, the demo root and the bundled demo archives are (locations of folders, not inside W)",
}

PATH_TYPES = {"Path", "PurePath", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"}


def _top_folders() -> set[str]:
    """The first component of every folder path under ``W`` that :class:`Workdir` names (``cache``, ``.scanlens``, ...)."""
    wd = Workdir(Path("/W"))
    found: set[str] = set()
    for name, member in inspect.getmembers(Workdir):
        if name.startswith("_") or name in ("ensure", "file_ref", "model_ids"):  # no path to name
            continue
        if isinstance(member, property):
            value = getattr(wd, name)
        elif inspect.isfunction(member):
            arity = len(inspect.signature(member).parameters) - 1
            value = getattr(wd, name)(*(["x"] * arity))
        else:
            continue
        path = value if isinstance(value, Path) else getattr(value, "root", None)
        if isinstance(path, Path):
            parts = path.relative_to(wd.root).parts
            if len(parts) > 1:
                found.add(parts[0])
    return found


def _is_literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr)


def _leading_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _is_join(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)


def _call_name(func: ast.AST) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        base = _call_name(func.value)
        return f"{base}.{func.attr}" if base else func.attr
    return ""


def path_literals(source: str, under_w: re.Pattern[str]) -> list[tuple[int, str]]:
    """(line, what) for every path built from a string literal in ``source``."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    joined_parts: set[int] = set()  # f-string pieces: judged as part of their f-string
    inner_joins: set[int] = set()  # `a / "b"` inside `a / "b" / "c"`: the whole chain is reported once
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            joined_parts.update(id(v) for v in node.values)
        if isinstance(node, ast.BinOp) and _is_join(node) and id(node) not in inner_joins:
            chain: ast.expr = node
            operands: list[ast.expr] = []
            while _is_join(chain):
                assert isinstance(chain, ast.BinOp)
                operands.append(chain.right)
                inner_joins.add(id(chain.left))
                chain = chain.left
            if any(_is_literal(o) for o in [*operands, chain]):
                found.append((node.lineno, f"path join: {ast.unparse(node)}"))
        elif isinstance(node, ast.Call):
            name = _call_name(node.func)
            literal = any(_is_literal(a) for a in node.args)
            if literal and (name.split(".")[-1] in PATH_TYPES or name.endswith("joinpath") or name == "os.path.join"):
                found.append((node.lineno, f"{name}(...) with a literal: {ast.unparse(node)}"))
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in joined_parts:
            continue
        text = _leading_text(node)
        if text is not None and under_w.match(text) and isinstance(node, ast.expr):
            found.append((node.lineno, f"a path under W spelled out: {ast.unparse(node)}"))
    return sorted(set(found))


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_path_literals_under_the_work_folder_outside_the_layout() -> None:
    under_w = re.compile("^(?:" + "|".join(re.escape(f) for f in sorted(_top_folders())) + ")/")
    offenders = []
    for module in _modules():
        relative = module.relative_to(REPO).as_posix()
        if relative == LAYOUT_MODULE or relative in ALLOWED:
            continue
        for line, what in path_literals(module.read_text(), under_w):
            offenders.append(f"{relative}:{line}: {what}")
    assert not offenders, (f"{len(offenders)} path(s) built from string literals outside pipeline/layout.py "
                           "(name them in pipeline.layout.Workdir, or allowlist a module whose paths are not under W "
                           "in tests/pipeline/test_layout.py):\n" + "\n".join(offenders))


def test_allowlist_names_existing_modules_with_reasons() -> None:
    for module, reason in ALLOWED.items():
        assert (REPO / module).is_file(), f"allowlisted {module} no longer exists: remove it from ALLOWED"
        assert reason.strip()


def test_the_check_catches_each_kind_of_literal_path() -> None:
    under_w = re.compile(r"^(?:cache|\.scanlens)/")
    source = '''
"""Docstring naming cache/preprocess/ is fine."""
a = root / "x.json"
b = root / f"fold_{k}"
c = Path("/tmp/x")
d = root.joinpath("x")
e = os.path.join(root, "x")
f = f"cache/preprocess/{key}.npy"
g = ".scanlens/lock"
ok = root / name
ok2 = Path(folder, name)
ok3 = "image/png"
h = root / "a" / name / "b.json"
ok4 = root / first / second
'''
    lines = [line for line, _ in path_literals(source, under_w)]
    assert lines == [3, 4, 5, 6, 7, 8, 9, 13]


def test_top_level_folders_come_from_the_layout() -> None:
    assert {"cache", "preprocessed", "models", "evaluation", "saliency", "registry", "scoring", ".scanlens",
            "volumes", "reports"} <= _top_folders()


def test_layout_doctest_passes() -> None:
    result = doctest.testmod(layout, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_the_docstring_tree_names_every_property() -> None:
    """Every file or folder a :class:`Workdir` property names appears in the module's drawn tree."""
    wd = Workdir(Path("/W"))
    tree = layout.__doc__ or ""
    missing = [name for name, member in inspect.getmembers(Workdir)
               if isinstance(member, property) and getattr(wd, name).name not in tree]
    assert not missing, f"pipeline/layout.py's docstring tree does not show: {missing}"
