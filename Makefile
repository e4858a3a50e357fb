# Caducée — the two commands: `make run` and `make test`.
#
#   make run    create .venv, install from uv.lock, make a demo home in .caducee
#               (first time), serve it
#   make test   install what the tests need, lint, type-check, run the suite on SQLite,
#               then again on PostgreSQL when CADUCEE_TEST_DATABASE_URL is set
#   make lock   refresh uv.lock from the ranges in pyproject.toml (see README)
#
# PYTEST_ARGS passes options to both passes, e.g. PYTEST_ARGS="-m 'not slow'" locally.
# PYTEST_WORKERS sets how many pytest-xdist workers run each pass (one per core by default;
# PYTEST_WORKERS=0 runs in one process). A test file stays on one worker (--dist loadfile),
# so a module's served gateway starts once. Each pass ends with its 20 slowest tests
# (--durations), to see where the suite's time goes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= .caducee
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=20
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
# The machine's own Python, never one uv would download.
UV_PYTHON := --no-python-downloads --python $(PYTHON)

.PHONY: run test install lock lint typecheck pytest-sqlite pytest-postgresql system-packages clean

$(UV): scripts/uv-bootstrap.txt
	@echo "==> [1/2] uv, pinned by hash, in $(TOOLS)"
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes -r scripts/uv-bootstrap.txt
	@touch $@

# --locked: refuse to install when uv.lock no longer matches pyproject.toml.
# --compile-bytecode, and compileall for Caducée's own (editable) sources at each install:
# where PYTHONDONTWRITEBYTECODE is set, nothing else writes .pyc files, and every process
# (each `caducee` command, each server a test starts) compiled every module again: 6 s of
# imports instead of 2.
$(INSTALLED): pyproject.toml uv.lock $(UV)
	@echo "==> [2/2] $(VENV) from uv.lock, Caducée itself editable (a first install takes a minute)"
	$(UV) sync --locked --extra test --compile-bytecode $(UV_PYTHON)
	@touch $@
	@echo "==> Installed."

install: $(INSTALLED)
	@$(BIN)/python -m compileall -q -j 0 caducee

run: install
	@test -f $(HOME_DIR)/caducee.toml || { \
		echo "==> Demo home in $(HOME_DIR): CA, keys, database, demo accounts and directory"; \
		$(BIN)/caducee init --home $(HOME_DIR) --demo; }
	@echo "==> Starting the gateway (Ctrl+C stops it)"
	exec $(BIN)/caducee serve --home $(HOME_DIR)

lock: $(UV)
	$(UV) lock --upgrade $(UV_PYTHON)

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
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
