# Loupe: `make run` starts everything; `make test` runs the whole suite.
# Both create the virtualenv and install requirements.txt when needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test setup migrate demo lint format bench clean

run: migrate
	$(PY) manage.py loupe_run

# One test process a core, at most 4: each loads torch and its own small models.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

# Tests never try the network: weights fetches go to loopback servers the tests start.
test: migrate
	LOUPE_OFFLINE=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

setup: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when requirements.txt changes.
$(INSTALLED): requirements.txt | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

migrate: setup
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py create_demo_project

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache
