"""The chaos harness of `bench/chaos.py` (a stack with a metered provider, its load and invariant checks), loaded
once per process for the end-to-end tests that drive it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_chaos() -> ModuleType:
    """bench/chaos.py as the module `chaos_bench` (it puts bench/ on the path for its own checks and load)."""
    if "chaos_bench" in sys.modules:
        return sys.modules["chaos_bench"]
    spec = importlib.util.spec_from_file_location("chaos_bench", BENCH / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos_bench"] = module
    spec.loader.exec_module(module)
    return module
