"""Where things are, and the harness's knobs from the environment.

GRIDPOINTS_BIN            the gridpointsd under test (default build/gridpointsd; `make test`
                          points it at the ASan+UBSan build)
GRIDPOINTS_TEST_URL       a server that is already running: nothing is started (see conftest)
GRIDPOINTS_TEST_KEEP=1    keep the session's temp dir even on success
GRIDPOINTS_TEST_LOG_LEVEL log.level of the servers started here
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SERVICES_SH = REPO / "scripts" / "services.sh"
TEST_CONF = REPO / "tests" / "api" / "test.conf"
LSAN_SUPPRESSIONS = REPO / "tests" / "api" / "lsan.supp"
GRIDPOINTS_BIN = Path(os.environ.get("GRIDPOINTS_BIN") or REPO / "build" / "gridpointsd")
EXTERNAL_URL = os.environ.get("GRIDPOINTS_TEST_URL", "").rstrip("/") or None
KEEP_ALWAYS = os.environ.get("GRIDPOINTS_TEST_KEEP") == "1"
LOG_LEVEL = os.environ.get("GRIDPOINTS_TEST_LOG_LEVEL")

READY_TIMEOUT = 20.0  # seconds a server may take to answer 200 on /readyz
STOP_TIMEOUT = 20.0  # seconds a server may take to exit after SIGTERM
CLI_TIMEOUT = 120.0
LOG_TAIL_LINES = 60
