# Caducée — the two commands: `make run` and `make test`.
#
#   make run    create .venv, install, make a demo home in .caducee (first time), serve it
#   make test   install what the tests need, lint, type-check, run the suite on SQLite,
#               then again on PostgreSQL when CADUCEE_TEST_DATABASE_URL is set

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOME_DIR ?= .caducee
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test install lint typecheck pytest-sqlite pytest-postgresql system-packages clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(INSTALLED)

run: install
	test -f $(HOME_DIR)/caducee.toml || $(BIN)/caducee init --home $(HOME_DIR) --demo
	exec $(BIN)/caducee serve --home $(HOME_DIR)

system-packages:
	scripts/ensure-debian-packages tests/debian-packages.txt

lint: install
	$(BIN)/ruff check caducee tests bench
	$(BIN)/ruff format --check caducee tests bench
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy --strict caducee

pytest-sqlite: install
	env -u CADUCEE_TEST_DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

pytest-postgresql: install
	@if [ -n "$$CADUCEE_TEST_DATABASE_URL" ]; then \
		echo "== pytest on PostgreSQL ($$CADUCEE_TEST_DATABASE_URL)"; \
		$(BIN)/pytest $(PYTEST_ARGS); \
	else \
		echo "== CADUCEE_TEST_DATABASE_URL not set: PostgreSQL run skipped"; \
	fi

test: install system-packages lint typecheck pytest-sqlite pytest-postgresql

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
