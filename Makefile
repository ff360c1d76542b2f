# citizen-hub — the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DB     ?= sqlite:///var/citizen-hub.sqlite3
# pytest-xdist processes of `make test` (one per core of the 2-core machines); a file's tests stay in one
# process (--dist loadfile): module fixtures (Dovecot, a browser, a server on a fixed port) are made once.
TEST_WORKERS ?= 2

.PHONY: run test bench crash soak lint init clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

init: $(STAMP)
	$(BIN)/citizen-hub init --demo --db $(DB)

run: init
	$(BIN)/citizen-hub serve --db $(DB)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

# SIGKILL the hub at random moments under load on every channel (SQLite and PostgreSQL); CRASH_KILLS per database.
crash: $(STAMP)
	$(BIN)/python -m bench.crash --kills $${CRASH_KILLS:-20}

# Mixed traffic for SOAK_SECONDS (default 600) per database: throughput, p50/p99, errors, memory; PNG in bench/results/.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --seconds $${SOAK_SECONDS:-600}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache
