# The two commands: `make run` (the product on its embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

# The machine's services for the test suite; override from the environment.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/poolsaas
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14
TEST_MQTT_URL ?= mqtt://127.0.0.1:1883

.PHONY: run test lint deps-audit format bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: $(STAMP)
	DEBUG=true $(PY) manage.py run_demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# pip-audit on the pinned requirements; says SKIPPED when no vulnerability data is reachable.
deps-audit: $(STAMP)
	$(PY) .ci/deps_audit.py

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint deps-audit
	bash firmware/tools/check.sh
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) MQTT_URL=$(TEST_MQTT_URL) \
		$(VENV)/bin/pytest
	@echo "--- database tests again on SQLite, the embedded default ---"
	env -u DATABASE_URL -u REDIS_URL POOLSAAS_DB_TESTS_ONLY=1 MQTT_URL=$(TEST_MQTT_URL) \
		$(VENV)/bin/pytest

bench: $(STAMP)
	@for b in bench/[!_]*.py; do \
		case $$b in */profile_summary.py) continue;; esac; \
		echo "== $$b"; $(PY) $$b || exit 1; \
	done

clean:
	rm -rf $(VENV) var staticfiles
