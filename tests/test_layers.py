"""Imports point one way (STYLE, "The house"): main → ui → routes/middleware → services →
scheduler, schemas, metrics, database → models → utils; scheduler.py imports nothing of the
app, and nothing below the routes imports FastAPI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A module may import app modules of a strictly lower layer only (services' own modules
# import each other within their layer).
LAYER = {
    "utils": 0,
    "scheduler": 0,
    "schemas": 0,
    "metrics": 0,
    "models": 1,
    "database": 2,
    "services": 3,
    "middleware": 4,
    "routes": 4,
    "ui": 5,  # the dashboard's pages use the routes' dependencies and the event stream
    "main": 6,
}
WEB_FRAMEWORKS = ("fastapi", "starlette")


def _app_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules() -> list[tuple[str, Path]]:
    found = []
    for top in LAYER:
        package = ROOT / top
        paths = sorted(package.glob("*.py")) if package.is_dir() else [ROOT / f"{top}.py"]
        found.extend((top, path) for path in paths)
    return found


def test_every_import_of_the_app_points_down_a_layer() -> None:
    upward = [
        f"{path.relative_to(ROOT)} imports {name}"
        for top, path in _modules()
        for name in _app_imports(path)
        if name in LAYER and name != top and LAYER[name] >= LAYER[top]
    ]
    assert upward == []


def test_the_scheduler_imports_nothing_of_the_app_and_only_the_web_layer_knows_http() -> None:
    scheduler_imports = _app_imports(ROOT / "scheduler.py") & set(LAYER)
    below_the_web = [
        f"{path.relative_to(ROOT)} imports {name}"
        for top, path in _modules()
        if LAYER[top] <= LAYER["services"]
        for name in _app_imports(path)
        if name in WEB_FRAMEWORKS
    ]
    assert scheduler_imports == set()
    assert below_the_web == []
