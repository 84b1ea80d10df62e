# Loupe: two commands on a fresh machine.
#   make demo   venv + host + every plugin, sample data, train, run a saved recipe, HTML report
#   make test   the same install, the Debian data sets the tests use, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(patsubst %/setup.cfg,%,$(wildcard plugins/*/setup.cfg))
export OMP_NUM_THREADS ?= 2

.PHONY: install data demo test bench screenshots clean

install: $(STAMP)

$(STAMP): requirements.lock setup.cfg $(wildcard plugins/*/setup.cfg)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

data:
	scripts/install-data.sh
	scripts/install-gentl-producers.sh $(BIN)/python

demo: install
	$(BIN)/loupe demo

test: install data
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests

bench: install data
	$(BIN)/python bench/host_overhead.py

screenshots: install
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m loupe_gui.screenshots screenshots/
	$(BIN)/python -m loupe_hmi.screenshots screenshots/

clean:
	rm -rf $(VENV) loupe-demo build *.egg-info plugins/*/*.egg-info
