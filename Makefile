PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PRACTICESYNC_HOME ?= $(CURDIR)/var

.PHONY: install demo test bench lint clean soak

$(BIN)/practicesync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/practicesync

demo: install
	$(BIN)/practicesync demo

test: install
	PRACTICESYNC_HOME=$(CURDIR)/var/test $(BIN)/pytest $(PYTEST_ARGS)

# Hostile input at soak strength: 1,000,000 mutated HL7 inputs (FUZZ_HL7_INPUTS), the other
# fuzz properties and the API schema run with the `soak` example counts. Takes about an hour.
soak: install
	PRACTICESYNC_HOME=$(CURDIR)/var/test HYPOTHESIS_PROFILE=soak $(BIN)/pytest -p no:timeout -s \
		tests/test_fuzz.py tests/test_api_schema.py $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) var
