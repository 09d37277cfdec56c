"""The docs keep their promises: a short README, links that resolve, a configuration reference that matches
the settings, a `make help` that lists every target and a pre-commit config that parses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
README_MAX_BYTES = 10 * 1024

# [text](target) outside code; images and reference-style links are not used in these docs.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _local_links(path: Path) -> list[str]:
    links = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_resolve(doc: Path) -> None:
    broken: list[str] = []
    for link in _local_links(doc):
        target, _, anchor = link.partition("#")
        resolved = (doc.parent / target).resolve() if target else doc
        if not resolved.exists():
            broken.append(f"{link}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{link}: no such heading")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_readme_maps_every_doc() -> None:
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in _local_links(README)}
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked]
    assert not missing, f"README's map of docs/ lacks {missing}"


def test_configuration_reference_matches_settings() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def _phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return [t for line in re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE) for t in line.split()]


def test_make_help_lists_every_phony_target() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "help"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    listed = set(re.findall(r"^make (\S+)", result.stdout, re.MULTILINE))
    missing = [target for target in _phony_targets() if target not in listed]
    assert not missing, f"`make help` does not list {missing}"


def test_every_named_rule_is_phony() -> None:
    rules = re.findall(r"^([a-z][a-z0-9_-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert set(rules) <= set(_phony_targets())


def test_pre_commit_hooks_use_the_workspace_tools() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert {"ruff-format", "ruff-check", "lint-imports", "unit-tests"} <= {hook["id"] for hook in hooks}
    for hook in hooks:
        assert hook["language"] == "system", hook["id"]
        assert hook["entry"].startswith("uv run --frozen --no-sync "), hook["id"]
