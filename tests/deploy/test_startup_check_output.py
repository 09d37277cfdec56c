"""What `make up` prints about a frozen bootstrap admin is text from the database (an admin's freeze reason, a
client's session id): printed to the operator's terminal without control characters and bounded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"


def _startup_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("startup_check_under_test", LOCAL / "startup_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_stored_text_is_shown_without_escape_sequences_and_bounded() -> None:
    shown = _startup_check()._shown
    assert shown("Loop detected\x1b[2J\x1b]0;pwned\x07\nrm -rf") == "Loop detected?[2J?]0;pwned??rm -rf"
    assert len(shown("x" * 5000)) == 200
    assert shown("ordinary reason: 4 repeats") == "ordinary reason: 4 repeats"
