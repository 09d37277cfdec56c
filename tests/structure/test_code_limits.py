"""House limits on source size: no file over 400 lines, no function over 60 (data files and migrations aside).

Parametrised per package so a failure names the package, file and function, and so one service's
work can be checked alone: `pytest tests/structure -k quota`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
PACKAGES = sorted(p for p in [*ROOT.glob("libs/*/src/*"), *ROOT.glob("services/*/src/*")] if p.is_dir())


def _sources(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "migrations" not in p.relative_to(package).parts)


def oversized(package: Path, root: Path = ROOT) -> list[str]:
    """Every file and function of `package` past the limits, as readable lines."""
    problems: list[str] = []
    for path in _sources(package):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root)
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            problems.append(f"{rel}: {lines} lines (max {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(
                        f"{rel}:{node.lineno} {node.name}(): {length} lines (max {MAX_FUNCTION_LINES})"
                    )
    return problems


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_no_source_file_or_function_past_the_limits(package: Path) -> None:
    assert oversized(package) == []


def test_the_check_catches_a_file_and_a_function_past_the_limits(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_function = f"def grown() -> None:\n{body}\n"
    padding = "\n".join(f"y{i} = {i}" for i in range(MAX_FILE_LINES))
    (tmp_path / "big.py").write_text(long_function + padding + "\n", encoding="utf-8")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "m001.py").write_text(padding + "\n", encoding="utf-8")
    assert sorted(oversized(tmp_path, tmp_path)) == [
        f"big.py: {MAX_FILE_LINES + MAX_FUNCTION_LINES + 1} lines (max {MAX_FILE_LINES})",
        f"big.py:1 grown(): {MAX_FUNCTION_LINES + 1} lines (max {MAX_FUNCTION_LINES})",
    ]
