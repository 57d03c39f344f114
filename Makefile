# The two commands a new user needs: `make run` and `make test`.
# Each installs what is missing first (scripts/bootstrap.sh).
.PHONY: setup setup-test run test unit lint typecheck bench corpus clean

VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

# The dashboard's Node: scripts/bootstrap.sh installs one into .node/ when the system's is
# missing or too old for Angular 21 (scripts/node.sh). Its bin/ comes first on PATH so that
# npm, npx and the browser tests' `node` use it; while it holds no node (the system's does),
# this changes nothing. Not made conditional on it: the first `make test` installs it.
NODE_PREFIX := $(abspath $(or $(HITL_SIP_NODE_PREFIX),.node))
export PATH := $(NODE_PREFIX)/bin:$(PATH)

setup:
	@bash scripts/bootstrap.sh run

setup-test:
	@bash scripts/bootstrap.sh test

run: setup
	$(VENV)/bin/hitl-sip serve $(ARGS)

# the dashboard's unit tests (Vitest + jsdom, Angular's toolchain), then Python's suite,
# which includes the browser end-to-end tests (tests/e2e, Debian Chromium via playwright-core);
# the 30 slowest tests are listed at the end (the CI run must stay under 30 minutes)
test: setup-test
	$(PY) -m ruff check hitl_sip tests bench rtp
	$(PY) -m mypy
	cd agent-app && npx ng test --watch=false --progress=false
	$(PY) -m pytest -q --durations=30 $(ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit
	cd agent-app && npx ng test --watch=false --progress=false

lint: setup
	$(PY) -m ruff check hitl_sip tests bench rtp
	$(PY) -m ruff format --check hitl_sip tests bench rtp

typecheck: setup
	$(PY) -m mypy

bench: setup
	$(PY) bench/worker_capacity.py
	$(PY) bench/bot_latency.py
	$(PY) bench/handoff_fanout.py
	$(PY) bench/bridge_latency.py
	$(PY) bench/bridge_capacity.py
	$(PY) bench/peer.py
	$(PY) bench/supervision.py
	$(PY) bench/transcript_lag.py
	$(PY) bench/system_capacity.py
	$(PY) bench/chaos_soak.py
	$(PY) bench/stt_vad.py

corpus: setup
	$(PY) rtp/generate.py

clean:
	rm -rf $(VENV) .node .pytest_cache .mypy_cache .ruff_cache
