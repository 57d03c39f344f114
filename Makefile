# The two commands a new user needs: `make run` and `make test`.
# Each installs what is missing first (scripts/bootstrap.sh).
.PHONY: setup run test unit lint typecheck bench corpus clean

VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

setup:
	@bash scripts/bootstrap.sh

run: setup
	$(VENV)/bin/hitl-sip serve $(ARGS)

test: setup
	$(PY) -m ruff check hitl_sip tests bench rtp
	$(PY) -m mypy
	$(PY) -m pytest -q $(ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit

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
	$(PY) bench/transcript_lag.py

corpus: setup
	$(PY) rtp/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
