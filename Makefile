# Quick start:  make demo   (creates .venv if missing, then snakemake --cores 8 results/table.csv)
#               make test   (the test suite; .ci/run calls this)
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8

.PHONY: env demo test lint bench clean

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

demo: env
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --cores $(CORES) results/table.csv

test: env
	PATH=$(CURDIR)/$(BIN):$$PATH python -m pytest -q

bench: env
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/extract.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/retrieval.py

lint: env
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --lint

clean:
	rm -rf results .snakemake
