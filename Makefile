# The two commands of the README:
#   make lab     set up .venv and open JupyterLab on the quickstart (HEADLESS=1: execute it to HTML)
#   make test    set up .venv and run the whole test suite (lint, pytest, notebooks via nbval)
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= wgpu,notebook,test

.PHONY: lab test sysdeps venv clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(BIN)/.installed

sysdeps:
	@bash scripts/sysdeps.sh

lab: sysdeps venv
ifeq ($(HEADLESS),1)
	mkdir -p artifacts
	$(BIN)/jupyter nbconvert --to html --execute notebooks/00_quickstart.ipynb --output-dir artifacts
	@echo "wrote artifacts/00_quickstart.html"
else
	@echo "JupyterLab opens notebooks/00_quickstart.ipynb (tutorials/ is beside it). With no browser"
	@echo "here, open the http://127.0.0.1:... address it prints, then notebooks/00_quickstart.ipynb."
	$(BIN)/jupyter lab --ServerApp.root_dir=. notebooks/00_quickstart.ipynb $(if $(filter 0,$(shell id -u)),--allow-root,)
endif

test: sysdeps venv
	bash scripts/test.sh $(BIN)

clean:
	rm -rf $(VENV) artifacts .pytest_cache
