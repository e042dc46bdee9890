# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lock pull clean-demo rehearse rehearse-ci

venv: $(STAMP)

# Exactly the lock: every package pinned and checked against its sha256, none resolved here
# (--no-deps), then the package itself from this checkout (its own dependencies are in the lock).
# torchattacks (pyproject's `crosscheck` extra) has a lock of its own: it is installed without its
# requests~=2.25 pin, which would break DVC; its real needs are in requirements.lock.
$(STAMP): requirements.lock requirements-crosscheck.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements-crosscheck.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The lock, for Linux x86_64 and Python 3.11 (what the tests run on; README, "Installing"):
# pyproject's dependencies and its `workflow` and `test` extras at the versions the current lock
# holds, and what a changed pyproject.toml adds. `make lock LOCK_FLAGS=--upgrade` moves every
# package to the newest version pyproject allows (`--upgrade-package pandas` one package). The
# jobs' conda environment (workflow/envs/lsqueeze.yaml) gets the core packages at the same versions.
UV ?= uv
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
lock:
	$(UV) pip compile -q pyproject.toml --extra workflow --extra test --generate-hashes \
	    $(LOCK_TARGET) --custom-compile-command "make lock" -o requirements.lock $(LOCK_FLAGS)
	echo "torchattacks==3.5.1" | $(UV) pip compile -q - --no-deps --generate-hashes $(LOCK_TARGET) \
	    --custom-compile-command "make lock" -o requirements-crosscheck.lock $(LOCK_FLAGS)
	$(UV) pip compile -q pyproject.toml -c requirements.lock --no-header --no-annotate $(LOCK_TARGET) \
	    | sed -n 's/^\([A-Za-z0-9].*==.*\)$$/      - \1/p' > workflow/envs/lsqueeze.pins
	sed -n '1,/^  - pip:$$/p' workflow/envs/lsqueeze.yaml | cat - workflow/envs/lsqueeze.pins \
	    > workflow/envs/lsqueeze.yaml.new
	mv workflow/envs/lsqueeze.yaml.new workflow/envs/lsqueeze.yaml
	rm workflow/envs/lsqueeze.pins

# validate first: one line naming file, line and key for a broken preset (Snakemake's own
# message for a YAML syntax error has no line number). The greedy scheduler: with cores the only
# resource it packs the jobs as well as the default ILP one, without a solver call between jobs.
demo: $(STAMP)
	@$(PY) -m lsqueeze validate params/demo.yaml
	$(VENV)/bin/snakemake --cores all --scheduler greedy --configfile params/demo.yaml
	@echo
	@echo "Tables:  results/demo/tables/tables.md (measured vs published), results/demo/tables/*.parquet"
	@echo "Figures: results/demo/figures/"
	@echo "(DVC records a run it makes: dvc repro, which reuses these results, writes dvc.lock and metrics/)"

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
