# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv pull clean-demo rehearse rehearse-ci

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# pyproject's `crosscheck` extra, without its requests~=2.25 pin (which would break DVC);
	# its real needs are already installed.
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

# validate first: one line naming file, line and key for a broken preset (Snakemake's own
# message for a YAML syntax error has no line number). The greedy scheduler: with cores the only
# resource it packs the jobs as well as the default ILP one, without a solver call between jobs.
demo: $(STAMP)
	@$(PY) -m lsqueeze validate params/demo.yaml
	$(VENV)/bin/snakemake --cores all --scheduler greedy --configfile params/demo.yaml
	@echo
	@echo "Tables:  results/demo/tables/tables.md (measured vs published), results/demo/tables/*.parquet"
	@echo "Figures: results/demo/figures/"
	@echo "(dvc status calls these 'not in cache' until DVC records them: dvc commit, or run the demo as dvc repro)"

# A run someone pushed: check the DVC remote (one line if it is not reachable), pull, restore
# Snakemake's state. Set the remote first: README, "Versioning with DVC".
pull: $(STAMP)
	$(PY) -m lsqueeze pull

test: $(STAMP)
	$(VENV)/bin/pytest -q

# Before a GPU run: the paper's whole DAG at toy scale on this machine, in results/rehearsal/
# (README, "Before a GPU run: rehearse"). REHEARSE=params/<preset>.yaml rehearses another preset;
# rehearse-ci: what CI runs, every job kind of every table once (`--subset`).
REHEARSE ?= params/paper.yaml
rehearse: $(STAMP)
	$(PY) -m lsqueeze rehearse $(REHEARSE) --cores $$(nproc)

rehearse-ci: $(STAMP)
	$(PY) -m lsqueeze rehearse $(REHEARSE) --subset --cores $$(nproc)

clean-demo:
	rm -rf results/demo results/store/digits28
