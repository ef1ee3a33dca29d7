PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PRACTICESYNC_HOME ?= $(CURDIR)/var

.PHONY: install demo test bench lint clean

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

bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) var
