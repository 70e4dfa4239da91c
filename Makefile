# The single door: `make run` brings the platform up, `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
export PYTHONPATH := $(CURDIR)
GATEWAY_ADDRESS ?= 127.0.0.1:8000

.PHONY: setup setup-test setup-bench run stop status test test-unit test-unpatched test-nameko test-faults bench lint lint-only lock clean

setup:
	@bash scripts/setup.sh

# The test tools too: Debian's chromium and a CJK font (browser tests), the compose client.
setup-test:
	@bash scripts/setup.sh --test-tools

# The bench tools: node and the SMPP test server (bench/sms.py).
setup-bench:
	@bash scripts/setup.sh --bench-tools

run: setup
	@$(PY) -m scripts.launcher stop >/dev/null 2>&1 || true
	@$(PY) -m scripts.launcher start --address $(GATEWAY_ADDRESS)
	@PYTHONWARNINGS=ignore $(PY) -m services.schedule.importer --hospital hebmu4 demo/hebei-demo.json demo/hebmu4-plan.csv
	@PYTHONWARNINGS=ignore $(PY) -m scripts.demo_history --weeks 3
	@echo
	@echo "  演示账号 / demo accounts (role, username / password):"
	@PYTHONWARNINGS=ignore $(PY) -m services.gateway.staff demo --gateway $(GATEWAY_ADDRESS)
	@echo
	@echo "  平台已启动 / platform is up:     http://$(GATEWAY_ADDRESS)/"
	@echo "  患者 patient:  /  /register  /login  /me  /reset-password"
	@echo "  话务员 hotline operator: /operator   窗口 window clerk: /clerk   医生 doctor: /doctor   医院管理 hospital admin: /admin"
	@echo "  短信发件箱 SMS outbox (platform_admin; verification codes are there): /dev/sms   API: /api/v1/openapi.json   health: /healthz   运维 operations (platform_admin): /ops"
	@echo "  logs: .run/logs/   stop with:  make stop"

stop:
	@$(PY) -m scripts.launcher stop

status:
	@$(PY) -m scripts.launcher status

# Separate pytest runs: nameko interface tests need eventlet.monkey_patch(), which would hang the
# browser tests and change the thread-based store tests; the fault run starts and kills servers of
# its own (tests/faults, a few minutes); see tests/README.md.
test: setup-test
	@$(MAKE) --no-print-directory lint-only test-unit test-unpatched test-nameko test-faults

# Unit tests need no server: the broker and the database are pointed at a closed port, so a unit
# test that reached for either would fail here.
test-unit:
	PG_URL=postgresql://postgres@127.0.0.1:9 AMQP_URI=amqp://guest:guest@127.0.0.1:9/ \
	  $(PYTEST) -q -rs --suppress-nameko-eventlet-notification tests/unit

test-unpatched:
	$(PYTEST) -q -rs --suppress-nameko-eventlet-notification tests/integration tests/e2e tests/browser

test-nameko:
	$(PYTEST) -q -rs tests/nameko

test-faults:
	$(PYTEST) -q -rs --suppress-nameko-eventlet-notification tests/faults

# Every bench in turn (bench/README.md), each on scratch databases / vhosts of its own, so it runs
# beside `make run`. A failing bench does not stop the others; the summary at the end lists every
# row of the performance table (.run/bench-results.jsonl, bench/results.py) and each bench's
# verdict, and fails when a bench did. BENCHES="flash_crowd steady" runs a subset;
# BENCH_ARGS_<bench>="--patients 1000" passes options to one bench.
BENCHES ?= eventstore rpc_echo flash_crowd steady big_store connections live_streams sms his stats_rebuild
bench: setup-bench
	@mkdir -p .run; : > .run/bench-results.jsonl; : > .run/bench-exits
	@export BENCH_RESULTS=$(CURDIR)/.run/bench-results.jsonl; \
	for b in $(BENCHES); do \
	  [ -f bench/$$b.py ] || { echo "=== bench/$$b.py: not there, skipped"; echo "$$b skipped" >> .run/bench-exits; continue; }; \
	  args=BENCH_ARGS_$$b; \
	  echo "=== bench/$$b.py $${!args}"; \
	  $(PY) bench/$$b.py $${!args}; echo "$$b $$?" >> .run/bench-exits; \
	done; \
	$(PY) bench/summary.py --results .run/bench-results.jsonl --exits .run/bench-exits

lint: setup lint-only

lint-only:
	$(VENV)/bin/ruff check contracts infra services scripts bench tests
	$(VENV)/bin/mypy contracts infra services

lock:
	$(PY) -m pip freeze --exclude-editable > requirements.lock

# Keeps .run/pii.key: the installation's databases are encrypted with it.
clean:
	@if [ -d .run ]; then find .run -mindepth 1 -maxdepth 1 ! -name pii.key -exec rm -rf {} +; fi
