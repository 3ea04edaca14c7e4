"""Data flows one way: no soundwatch module imports a later stage.

Every module under ``soundwatch/`` is parsed with :mod:`ast`; every import of a
soundwatch module, at module level or inside a function, must name the module's own
stage or an earlier one. ``soundwatch/__init__.py`` and ``__main__.py`` are the top
level and may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "soundwatch"

# Lowest first; modules in one tuple share a stage.
STAGES: list[tuple[str, ...]] = [
    ("errors", "fileio", "registry", "validation", "params"),
    ("data",),
    ("synth",),
    ("features",),
    ("encoders",),
    ("thresholds",),
    ("training",),
    ("detectors",),
    ("evaluation",),
    ("reports",),
    ("store",),
    ("runtime", "api"),
    ("services",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}
TOP_LEVEL = {"soundwatch", "soundwatch.__main__"}  # may import anything


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    """The stage of ``soundwatch.<stage>[.<rest>]``."""
    return module.split(".")[1]


def package_of(path: Path) -> str:
    """The package that relative imports in ``path`` start from."""
    module = module_name(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def soundwatch_imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every soundwatch import in ``source``, at any depth.

    ``package`` resolves relative imports (``from ..x import y``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            if names[0] == "soundwatch":
                # ``from soundwatch import x``: x is a stage, or a name of the top level
                # (``__version__``), which every stage may import.
                names = [
                    f"soundwatch.{alias.name}"
                    for alias in node.names
                    if not alias.name.startswith("__")
                ]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.startswith("soundwatch.")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_stage():
    stages = {stage_of(module_name(path)) for path in MODULES if module_name(path) not in TOP_LEVEL}
    assert stages <= set(RANK), f"modules outside the stage order: {sorted(stages - set(RANK))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_no_module_imports_a_later_stage(path):
    module = module_name(path)
    if module in TOP_LEVEL:
        return
    own = stage_of(module)
    later = [
        f"line {line}: {target}"
        for line, target in soundwatch_imports(path.read_text(encoding="utf-8"), package_of(path))
        if RANK.get(stage_of(target), len(STAGES)) > RANK[own]
    ]
    assert not later, f"{module} (stage {own}) imports a later stage: " + "; ".join(later)


def test_the_checker_sees_every_kind_of_import():
    source = (
        "import soundwatch.cli.main\n"
        "from soundwatch import reports, __version__\n"
        "def f():\n"
        "    from soundwatch.evaluation.protocol import evaluate\n"
        "    from ..detectors import base\n"
    )
    assert sorted(soundwatch_imports(source, "soundwatch.data")) == [
        (1, "soundwatch.cli.main"),
        (2, "soundwatch.reports"),
        (4, "soundwatch.evaluation.protocol"),
        (5, "soundwatch.detectors"),
    ]
