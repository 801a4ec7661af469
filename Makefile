# make run   — set up on first use, then serve the console on http://127.0.0.1:5000 (PORT overrides)
# make test  — install what the tests need, start the real servers, run every test (SQLite and PostgreSQL)
# make bench — measure inbound and outbound mail throughput (see BENCHMARKS.md)
# make bench-compare BASE=rev — time the inbound poll of this checkout against another revision
# make soak  — kill pollers and take servers away mid-poll, on SQLite and PostgreSQL; count every mail
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
PORT ?= 5000
export FLASK_APP := wsgi

.PHONY: run test bench bench-compare soak services-stop clean

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	@$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[deploy]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[test,deploy]'
	@touch $@

run: $(VENV)/.installed
	$(FLASK) db upgrade
	$(FLASK) demo seed
	@if [ -n "$$REDIS_URL" ]; then \
	  echo "REDIS_URL is set: starting rq worker and rq cron beside the console"; \
	  $(VENV)/bin/rq worker --worker-class jobs.worker.Worker --url "$$REDIS_URL" helpdesk & \
	  $(VENV)/bin/rq cron --url "$$REDIS_URL" jobs/cron.py & \
	fi; \
	$(FLASK) serve --port $(PORT)

test: $(VENV)/.installed-test
	bash tests/services/install-deps.sh
	bash tests/run.sh $(PY)

bench: $(VENV)/.installed-test
	bash tests/services/install-deps.sh
	bash tests/run.sh $(PY) --bench

soak: $(VENV)/.installed-test
	bash tests/services/install-deps.sh
	bash tests/run.sh $(PY) --soak

bench-compare: $(VENV)/.installed-test
	@test -n "$(BASE)" || { echo "name the revision to compare against: make bench-compare BASE=HEAD~1"; exit 2; }
	bash tests/services/install-deps.sh
	bash tests/run.sh $(PY) --compare $(BASE)

clean:
	rm -rf $(VENV) *.egg-info test-artifacts
