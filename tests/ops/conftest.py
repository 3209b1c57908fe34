"""tests/ops/conftest.py -- the operations drills (`make test-ops`): a load balancer in front
of several instances, a streaming read replica, backup and point-in-time restore. They are long
and start extra processes (HAProxy, PostgreSQL clusters), so they are not part of `make test`.

They use the black-box harness of tests/api as it is: its fixtures and hooks are loaded from
tests/api/conftest.py (under another module name: both files are called conftest), the helpers
come from the gp package beside it. Figures the drills measure are printed and appended to
$GRIDPOINTS_OPS_FIGURES (default build/test-ops-figures.txt)."""

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

API = Path(__file__).resolve().parents[1] / "api"
sys.path.insert(0, str(API))

_spec = importlib.util.spec_from_file_location("gp_api_conftest", API / "conftest.py")
_api_conftest = importlib.util.module_from_spec(_spec)
sys.modules["gp_api_conftest"] = _api_conftest
_spec.loader.exec_module(_api_conftest)
globals().update({k: v for k, v in vars(_api_conftest).items()
                  if not k.startswith("__") and k != "__getattr__"})

FIGURES = Path(os.environ.get("GRIDPOINTS_OPS_FIGURES")
               or API.parents[1] / "build" / "test-ops-figures.txt")


def record_figures(drill, **figures):
    """Prints one drill's figures and appends them (one JSON line) to FIGURES."""
    line = json.dumps({"drill": drill, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       **figures})
    print(f"\nFIGURES {line}")
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with open(FIGURES, "a") as f:
        f.write(line + "\n")
