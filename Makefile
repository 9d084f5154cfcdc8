# Quick start:  make demo   (creates .venv if missing, then snakemake --cores 8 results/table.csv)
#               make test   (the test suite; .ci/run calls this)
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8
# test processes (pytest-xdist; one test file per process, so a module's fixtures are built once)
TEST_WORKERS ?= 2
# extras of pyproject.toml: cpu (faiss-cpu) or gpu (faiss's GPU build), never both; slurm; test
EXTRAS ?= cpu,slurm,test

.PHONY: env demo test lint bench clean

env: $(VENV)/.installed

# constraints.txt holds the exact versions; pyproject.toml says what is needed.
$(VENV)/.installed: constraints.txt pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

demo: env
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --cores $(CORES) results/table.csv

test: env
	PATH=$(CURDIR)/$(BIN):$$PATH python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: env
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/extract.py
	PATH=$(CURDIR)/$(BIN):$$PATH python bench/retrieval.py

lint: env
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --lint

clean:
	rm -rf results .snakemake
