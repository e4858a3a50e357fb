# Caducée — the two commands: `make run` and `make test`.
#
#   make run    create .venv, install from pylock.toml, make a demo home in .caducee
#               (first time), serve it
#   make test   install what the tests need, lint, type-check, run the suite on SQLite,
#               then again on PostgreSQL when CADUCEE_TEST_DATABASE_URL is set
#   make lock   refresh pylock.toml from the ranges in pyproject.toml (see README)
#
# PYTEST_ARGS passes options to both passes, e.g. PYTEST_ARGS="-m 'not slow'" locally.
# PYTEST_WORKERS sets how many pytest-xdist workers run each pass (one per core by default;
# PYTEST_WORKERS=0 runs in one process). A test file stays on one worker (--dist loadfile),
# so a module's served gateway starts once.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= .caducee
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile
PIP := $(BIN)/python -m pip --disable-pip-version-check
LOCK_VENV := .venv-lock

.PHONY: run test install lock lint typecheck pytest-sqlite pytest-postgresql system-packages clean

$(INSTALLED): pyproject.toml pylock.toml scripts/pip-bootstrap.txt
	@echo "==> [1/3] Python environment in $(VENV), with the pip that reads pylock.toml"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r scripts/pip-bootstrap.txt
	@echo "==> [2/3] Locked dependencies from pylock.toml (a first install takes a minute or two)"
	$(PIP) install --progress-bar on -r pylock.toml
	@echo "==> [3/3] Caducée itself (editable)"
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $@
	@echo "==> Installed."

install: $(INSTALLED)

run: install
	@test -f $(HOME_DIR)/caducee.toml || { \
		echo "==> Demo home in $(HOME_DIR): CA, keys, database, demo accounts and directory"; \
		$(BIN)/caducee init --home $(HOME_DIR) --demo; }
	@echo "==> Starting the gateway (Ctrl+C stops it)"
	exec $(BIN)/caducee serve --home $(HOME_DIR)

# --isolated and PyPI's index: the lock names PyPI's files, not a local mirror's.
lock:
	@test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes -r scripts/pip-bootstrap.txt
	$(LOCK_VENV)/bin/python scripts/direct-requirements.py > $(LOCK_VENV)/direct-requirements.txt
	$(LOCK_VENV)/bin/python -m pip lock --isolated --index-url https://pypi.org/simple \
		-r $(LOCK_VENV)/direct-requirements.txt -o pylock.toml

system-packages:
	@echo "==> Debian packages the tests drive (tests/debian-packages.txt)"
	scripts/ensure-debian-packages tests/debian-packages.txt

lint: install
	@echo "==> ruff, ruff format, import contracts"
	$(BIN)/ruff check caducee tests bench
	$(BIN)/ruff format --check caducee tests bench
	$(BIN)/lint-imports

typecheck: install
	@echo "==> mypy --strict"
	$(BIN)/mypy --strict caducee tests/harness

pytest-sqlite: install
	@echo "==> pytest on SQLite"
	env -u CADUCEE_TEST_DATABASE_URL $(PYTEST) $(PYTEST_ARGS)

pytest-postgresql: install
	@if [ -n "$$CADUCEE_TEST_DATABASE_URL" ]; then \
		echo "==> pytest on PostgreSQL ($$CADUCEE_TEST_DATABASE_URL)"; \
		$(PYTEST) $(PYTEST_ARGS); \
	else \
		echo "==> CADUCEE_TEST_DATABASE_URL not set: PostgreSQL pass skipped"; \
	fi

test: install system-packages lint typecheck pytest-sqlite pytest-postgresql

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
