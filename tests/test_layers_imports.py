"""The package's import arrows point down only (the layer order of DESIGN.md and the README).

Every import in every module of `heal_swin`, also the ones inside functions, is checked: a package
(or a top-level module such as heal_swin/equivariance.py, which has a row of its own) may import a
package or module of a lower row, never one of its own row (a sibling) or of a higher one, and never
another package's `_private` module (what a neighbour needs comes from its `__init__`).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "heal_swin"

# row of each package (heal_swin/<name>/) and top-level module (heal_swin/<name>.py), lowest first; the
# names on one row import neither each other
ROWS = [("grid",), ("harmonics",), ("cameras",), ("projection", "equivariance"), ("data", "layers"),
        ("tasks", "models"), ("engine", "export"), ("tools", "study")]
RANK = {name: i for i, row in enumerate(ROWS) for name in row}
TOP = len(ROWS)  # the application, above every row:
APPLICATION = ("__init__", "demo")  # heal_swin/__init__.py, heal_swin/demo.py


def _owner(module: str) -> str | None:
    """'heal_swin.grid._windows' -> 'grid'; 'heal_swin.equivariance' -> 'equivariance'; the application
    ('heal_swin', 'heal_swin.demo') -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _targets(module: str, is_package: bool, source: str):
    """(line, imported module) for every import of `heal_swin` modules in `source`."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "heal_swin":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1] + (node.module.split(".") if node.module else [])
            else:
                stem = node.module.split(".")
            if stem[0] != "heal_swin":
                continue
            if len(stem) == 1:  # `from heal_swin import grid, projection` names the packages
                for alias in node.names:
                    yield node.lineno, ".".join(stem + [alias.name])
                continue
            yield node.lineno, ".".join(stem)
            for alias in node.names:  # `from ..grid import _windows` names a private module
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, ".".join(stem + [alias.name])


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The import arrows of one module that break the layer rules, as readable lines."""
    own = _owner(module)
    rank = RANK[own] if own else TOP
    out = []
    for line, target in _targets(module, is_package, source):
        other = _owner(target)
        if other is None or other == own:
            continue
        where = f"{module}:{line} imports {target}"
        if RANK[other] >= rank:
            kind = "sideways" if RANK[other] == rank else "upwards"
            out.append(f"{where} ({kind}: {own or 'heal_swin'} is on row {rank}, {other} on row {RANK[other]})")
        elif any(p.startswith("_") for p in target.split(".")[2:]):
            out.append(f"{where} (another package's private module; export what is needed from "
                       f"heal_swin.{other})")
    return out


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), is_package, path


def test_every_import_points_down():
    found = []
    for module, is_package, path in _modules():
        found += violations(module, path.read_text(), is_package)
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_every_package_and_module_has_a_row():
    """A new package or top-level module must be given its row (else it would count as the application)."""
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - set(APPLICATION)
    assert "equivariance" in modules
    assert packages <= set(RANK), f"packages without a row in the layer order: {packages - set(RANK)}"
    assert modules <= set(RANK), f"top-level modules without a row in the layer order: {modules - set(RANK)}"
    assert all(_owner(f"heal_swin.{name}") is None for name in APPLICATION[1:])


@pytest.mark.parametrize("module, source, expected", [
    ("heal_swin.grid._faces", "from ..engine import trainer", "upwards"),
    ("heal_swin.grid._faces", "import heal_swin.models", "upwards"),
    ("heal_swin.engine.evaluation", "def f():\n    from ..tools import _views", "upwards"),
    ("heal_swin.export._export", "from ..engine.trainer import build_datasets", "sideways"),
    ("heal_swin.data.datasets", "from heal_swin import layers", "sideways"),
    ("heal_swin.models.heal_swin", "from ..grid._windows import grid_shift", "private module"),
    ("heal_swin.layers._attention", "from ..grid import _windows", "private module"),
    ("heal_swin.engine", "from ..models import create_model", None),
    ("heal_swin.engine", "from .trainer import main", None),
    ("heal_swin.tools.run_export", "from ..engine.trainer import build_datasets", None),
    ("heal_swin.models._heads", "from ..layers import Mlp", None),
    ("heal_swin.equivariance", "from .layers import trivial", "upwards"),
    ("heal_swin.equivariance", "from heal_swin.models import PlainFaceCNN", "upwards"),
    ("heal_swin.equivariance", "from . import projection", "sideways"),
    ("heal_swin.projection._frames", "from ..equivariance import rz", "sideways"),
    ("heal_swin.equivariance", "def f():\n    from .harmonics import _sht", "private module"),
    ("heal_swin.equivariance", "from . import grid, harmonics", None),
    ("heal_swin.tools.equivariance", "from ..equivariance import so3_errors", None),
    ("heal_swin.models._controls", "from ..equivariance import rz", None),
    ("heal_swin.demo", "from .equivariance import assert_equivariant", None),
    ("heal_swin.study.report", "from ..tools import equivariance", "sideways"),
    ("heal_swin.study.report", "from ..engine import trainer", None),
])
def test_the_checker_finds_a_bad_arrow(module, source, expected):
    """The rule itself: an upward, sideways or private import added anywhere is caught."""
    found = violations(module, source, is_package=module == "heal_swin.engine")
    if expected is None:
        assert found == []
    else:
        assert found and all(expected in f for f in found), found
