# gridpoints -- one Makefile, in the style of Redis and hiredis (STYLE.md §42).
#
#   make              build build/gridpointsd (debug, -Werror)
#   make run          install what is missing, start private PostgreSQL + Redis under var/,
#                     migrate, load demo data once, serve on 127.0.0.1:8080
#   make stop         stop the server of `make run` and its PostgreSQL + Redis
#   make test         unit tests + black-box API tests, under ASan+UBSan, + browser tests
#   make test-ops     operations drills (tests/ops): load balancer, read replica, restore
#   make web          the worker app (web/worker) into build/web/app/, the console and the board
#                     (web/console) into build/web/console/ and build/web/board/ (skipped without npm)
#   make bench        benchmarks (-O2, no sanitizers), results in docs/BENCHMARKS.md
#   make format / format-check / clean
#   make V=1 ...      show full compiler commands
#
# Variables: SANITIZER=address,undefined  OPT=-O2  WERROR=0  BUILD=build-dir

STD      = -std=c11 -D_GNU_SOURCE
WARN     = -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition \
           -Wpointer-arith -Wformat=2 -Wundef -Wwrite-strings -Wshadow \
           -Werror=implicit-function-declaration -Wno-unused-parameter
WERROR  ?= 1
ifeq ($(WERROR),1)
WARN    += -Werror
endif
OPT     ?= -O1
DEBUG   ?= -g3 -fno-omit-frame-pointer
BUILD   ?= build
SANITIZER ?=

PKGS     = libevent libevent_openssl libevent_pthreads libpq hiredis jansson openssl inih zlib \
           xlsxwriter
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

FINAL_CFLAGS  = $(STD) $(WARN) $(OPT) $(DEBUG) -Iinclude -I$(BUILD)/gen $(PKG_CFLAGS) $(CFLAGS)
FINAL_LDFLAGS = $(LDFLAGS)
FINAL_LIBS    = $(PKG_LIBS) -lpthread -lm $(LIBS)
ifneq ($(SANITIZER),)
FINAL_CFLAGS  += -fsanitize=$(SANITIZER) -fno-sanitize-recover=undefined
FINAL_LDFLAGS += -fsanitize=$(SANITIZER)
endif

SRC  := $(sort $(wildcard server/*.c))
OBJ  := $(SRC:server/%.c=$(BUILD)/%.o)
DEP  := $(OBJ:.o=.d)
LIB_OBJ := $(filter-out $(BUILD)/main.o,$(OBJ))

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PY ?= /usr/bin/python3

.PHONY: all run test unit api fuzz bench format format-check clean deps check-config-docs web browser \
	check-includes test-ops openapi-lint
.DEFAULT_GOAL := all

all: $(BUILD)/gridpointsd web

# A change of flags rebuilds everything (Redis's .make-settings idea).
SETTINGS := $(BUILD)/.settings
$(shell mkdir -p $(BUILD) && echo '$(FINAL_CFLAGS) $(FINAL_LDFLAGS)' | cmp -s - $(SETTINGS) || echo '$(FINAL_CFLAGS) $(FINAL_LDFLAGS)' > $(SETTINGS))

# V=1 shows the full commands.
ifeq ($(V),1)
Q =
say = @true
else
Q = @
say = @printf '  %-6s %s\n'
endif

$(BUILD)/%.o: server/%.c $(SETTINGS)
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(FINAL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/gridpointsd: $(OBJ)
	$(say) LINK $@
	$(Q)$(CC) $(FINAL_LDFLAGS) -o $@ $(OBJ) $(FINAL_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJ) $(SETTINGS)
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(FINAL_CFLAGS) -MMD -MP -o $@ $< $(LIB_OBJ) $(FINAL_LDFLAGS) $(FINAL_LIBS) -lcmocka

-include $(DEP) $(UNIT_BIN:=.d)

# What this build knows of sql/: the migration version it needs and the hash of the function
# files, compared with the database by `migrate` and at start-up (the server never reads sql/).
SQL_FILES := $(sort $(wildcard sql/migrations/*.sql sql/functions/*.sql))
$(BUILD)/gen/sql_build.h: scripts/sql-build-header.sh $(SQL_FILES) sql/migrations sql/functions
	@mkdir -p $(@D)
	$(Q)scripts/sql-build-header.sh sql $@
$(BUILD)/cli.o $(BUILD)/janitor.o $(BUILD)/main.o $(BUILD)/metrics.o: $(BUILD)/gen/sql_build.h

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@GRIDPOINTS_RUN_CITY=$(if $(CITY),1,) scripts/run.sh

# make stop: the server of `make run` (SIGTERM) and its private PostgreSQL and Redis.
.PHONY: stop
stop:
	@scripts/run.sh stop

# make test: sanitizers on, in their own build dir so a plain build is not clobbered.
test: deps check-config-docs check-includes format-check openapi-lint
	@$(MAKE) --no-print-directory SANITIZER=address,undefined BUILD=build/asan unit api browser
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(or $(TEST_FUZZ_SECONDS),15)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

api: $(BUILD)/gridpointsd
	GRIDPOINTS_BIN=$(abspath $(BUILD)/gridpointsd) $(PY) -m pytest -q -p no:cacheprovider tests/api $(PYTEST_ARGS)

# Operations drills (tests/ops, docs/OPERATIONS.md): HAProxy in front of three instances through
# a rolling restart, a streaming read replica, backup and point-in-time restore. Long (a few
# minutes), so not in `make test`; .ci/run runs it after. Figures go to build/test-ops-figures.txt.
test-ops: deps
	@$(MAKE) --no-print-directory SANITIZER=address,undefined BUILD=build/asan build/asan/gridpointsd
	rm -f build/test-ops-figures.txt
	GRIDPOINTS_BIN=$(abspath build/asan/gridpointsd) $(PY) -m pytest -q -p no:cacheprovider \
		-rA tests/ops $(PYTEST_ARGS)
	@cat build/test-ops-figures.txt

# libFuzzer (tests/fuzz), built with clang and the fuzzer's instrumentation in FUZZ_BUILD:
#   fuzz_input  the body parser and the router (every server object except main)
#   fuzz_http   whole requests over loopback through the real server, PostgreSQL and Redis
#               replaced by tests/fuzz/fuzz_backend.c (every server object except main, db, kv)
# Each runs FUZZ_SECONDS; fuzz_http first replays tests/fuzz/regressions/http/ once each. Its
# seeds (one request per route of docs/openapi.yaml, the JSONTestSuite files as bodies) are
# generated into FUZZ_BUILD by scripts/fuzz-seeds.py; its log goes to FUZZ_BUILD/fuzz_http.log.
FUZZ_SECONDS ?= 60
FUZZ_BUILD ?= build/fuzz
FUZZ_FLAGS = CC=clang BUILD=$(FUZZ_BUILD) CFLAGS="-fsanitize=fuzzer-no-link,address,undefined" \
	LDFLAGS="-fsanitize=address,undefined"
FUZZ_HTTP_ARGS = -max_len=8192 -timeout=30 -dict=$(FUZZ_BUILD)/http.dict -print_final_stats=1
FUZZ_HTTP_LOG = $(FUZZ_BUILD)/fuzz_http.log
FUZZ_HTTP_FAIL = { grep -E 'VIOLATION|SUMMARY' $(FUZZ_HTTP_LOG); tail -n 50 $(FUZZ_HTTP_LOG); exit 1; }
fuzz:
	@$(MAKE) --no-print-directory $(FUZZ_FLAGS) $(FUZZ_BUILD)/fuzz_input $(FUZZ_BUILD)/fuzz_http
	@mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/corpus-http
	$(FUZZ_BUILD)/fuzz_input -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
		-print_final_stats=1 $(FUZZ_BUILD)/corpus tests/fuzz/seeds
	@$(PY) scripts/fuzz-seeds.py $(FUZZ_BUILD)
	@echo "== fuzz_http: regressions"
	@$(FUZZ_BUILD)/fuzz_http $(FUZZ_HTTP_ARGS) tests/fuzz/regressions/http/* \
		> $(FUZZ_HTTP_LOG) 2>&1 || $(FUZZ_HTTP_FAIL)
	@echo "== fuzz_http: $(FUZZ_SECONDS) s"
	@$(FUZZ_BUILD)/fuzz_http $(FUZZ_HTTP_ARGS) -max_total_time=$(FUZZ_SECONDS) \
		$(FUZZ_BUILD)/corpus-http $(FUZZ_BUILD)/seeds-http \
		>> $(FUZZ_HTTP_LOG) 2>&1 || $(FUZZ_HTTP_FAIL)
	@grep -E '^(stat::|Done|INFO: seed corpus)' $(FUZZ_HTTP_LOG) | tail -n 8

$(FUZZ_BUILD)/fuzz_input: tests/fuzz/fuzz_input.c $(LIB_OBJ)
	$(say) FUZZ $@
	$(Q)$(CC) $(FINAL_CFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB_OBJ) $(FINAL_LDFLAGS) $(FINAL_LIBS)

FUZZ_HTTP_OBJ = $(filter-out $(BUILD)/db.o $(BUILD)/kv.o,$(LIB_OBJ))
$(FUZZ_BUILD)/fuzz_http: tests/fuzz/fuzz_http.c tests/fuzz/fuzz_backend.c tests/fuzz/fuzz_backend.h \
		$(FUZZ_HTTP_OBJ)
	$(say) FUZZ $@
	$(Q)$(CC) $(FINAL_CFLAGS) -Itests/fuzz -fsanitize=fuzzer -o $@ tests/fuzz/fuzz_http.c \
		tests/fuzz/fuzz_backend.c $(FUZZ_HTTP_OBJ) $(FINAL_LDFLAGS) $(FINAL_LIBS)

bench: deps
	@$(MAKE) --no-print-directory OPT=-O2 DEBUG=-g BUILD=build/bench all
	@scripts/bench.sh

# The browser apps (web/): built with npm into build/web/, which gridpointsd serves (web.dir).
# `npm ci` runs once per lockfile (a stamp in node_modules); `npm run build` generates the API
# types from docs/openapi.yaml, type-checks, bundles and prints the first-load size. Without npm
# the web build is skipped with a message: the C build never depends on it.
WEB_WORKER := web/worker
WEB_OUT    := build/web/app
WEB_STAMP  := $(WEB_WORKER)/node_modules/.npm-ci.stamp
WEB_SRC    := $(shell find $(WEB_WORKER)/src $(WEB_WORKER)/public $(WEB_WORKER)/sw -type f \
                -not -name '*.gen.ts' 2>/dev/null) $(addprefix $(WEB_WORKER)/,index.html \
                vite.config.ts tsconfig.json env.d.ts package.json scripts/size.mjs)
HAVE_NPM   := $(shell command -v npm 2>/dev/null)

web:
ifeq ($(HAVE_NPM),)
	@echo "web: npm not found: the worker app is NOT built (install nodejs and npm, then make web)"
else
	@$(MAKE) --no-print-directory $(WEB_OUT)/index.html $(CONSOLE_OUT)/index.html
endif

$(WEB_STAMP): $(WEB_WORKER)/package-lock.json
	cd $(WEB_WORKER) && npm ci --no-audit --no-fund
	@touch $@

$(WEB_OUT)/index.html: $(WEB_STAMP) $(WEB_SRC) docs/openapi.yaml
	cd $(WEB_WORKER) && npm run build

# The staff console and dashboard (web/console, Element Plus + ECharts) into build/web/console/,
# and the public points board (web/console/board) into build/web/board/: one package, two builds.
WEB_CONSOLE  := web/console
CONSOLE_OUT  := build/web/console
CONSOLE_STAMP := $(WEB_CONSOLE)/node_modules/.npm-ci.stamp
CONSOLE_SRC  := $(shell find $(WEB_CONSOLE)/src $(WEB_CONSOLE)/board -type f -not -name '*.gen.ts' \
                  2>/dev/null) $(addprefix $(WEB_CONSOLE)/,index.html vite.config.ts \
                  vite.board.config.ts tsconfig.json env.d.ts package.json scripts/size.mjs)

$(CONSOLE_STAMP): $(WEB_CONSOLE)/package-lock.json
	cd $(WEB_CONSOLE) && npm ci --no-audit --no-fund
	@touch $@

$(CONSOLE_OUT)/index.html: $(CONSOLE_STAMP) $(CONSOLE_SRC) docs/openapi.yaml
	cd $(WEB_CONSOLE) && npm run build

# Browser tests (tests/browser, node:test + playwright-core driving /usr/bin/chromium as a
# phone) against this build's gridpointsd with its own PostgreSQL and Redis; screenshots and
# speed figures in build/browser-artifacts/.
browser: web $(BUILD)/gridpointsd
	@test -n "$(HAVE_NPM)" || { echo "browser: npm not found: install nodejs and npm" >&2; exit 1; }
	GRIDPOINTS_BIN=$(abspath $(BUILD)/gridpointsd) node --test $(wildcard tests/browser/*.test.mjs)

check-config-docs:
	@scripts/check-config-docs.sh

# docs/openapi.yaml must pass `redocly lint` (redocly.yaml: the rules and why some are off;
# .redocly.lint-ignore.yaml: the few operations exempt by design). @redocly/cli is pinned in
# tools/redocly/package-lock.json.
REDOCLY_DIR   := tools/redocly
REDOCLY_STAMP := $(REDOCLY_DIR)/node_modules/.installed
$(REDOCLY_STAMP): $(REDOCLY_DIR)/package-lock.json
	@test -n "$(HAVE_NPM)" || { echo "openapi-lint: npm not found: install nodejs and npm" >&2; exit 1; }
	cd $(REDOCLY_DIR) && npm ci --no-audit --no-fund
	@touch $@
openapi-lint: $(REDOCLY_STAMP)
	$(REDOCLY_DIR)/node_modules/.bin/redocly lint --config redocly.yaml docs/openapi.yaml

# No module of server/ and include/ may include another that includes it back (X = server/X.c
# + include/X.h); the script's self-test first shows that it can fail.
check-includes:
	@$(PY) scripts/check-includes.py --self-test
	@$(PY) scripts/check-includes.py

format:
	clang-format -i server/*.c include/*.h tests/unit/*.c

format-check:
	clang-format --dry-run --Werror server/*.c include/*.h tests/unit/*.c

clean:
	rm -rf build
