# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# torchattacks pins requests~=2.25 (which would break DVC); its real needs are already here.
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores all --configfile params/demo.yaml
	@echo
	@echo "Tables:  results/demo/tables/tables.md (measured vs published), results/demo/tables/*.parquet"
	@echo "Figures: results/demo/figures/"

test: $(STAMP)
	$(VENV)/bin/pytest -q

clean-demo:
	rm -rf results/demo
