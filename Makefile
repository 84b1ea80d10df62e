# Loupe: two commands on a fresh machine.
#   make demo   venv + host + every plugin, sample data, train, run a saved recipe, HTML report
#   make test   the same install, the Debian data sets the tests use, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGINS := $(patsubst %/setup.cfg,%,$(wildcard plugins/*/setup.cfg))
export OMP_NUM_THREADS ?= 2
PYTHON_MIN ?= 3.11
# the interpreter the venv is (or will be) made with
VENV_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

.PHONY: install data demo test bench screenshots clean python-check

install: $(STAMP)

$(STAMP): requirements.lock setup.cfg $(wildcard plugins/*/setup.cfg) | python-check
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

# a clear message, not a pip error half-way, when the Python is too old
python-check:
	@$(VENV_PYTHON) -c 'import sys; want = tuple(int(x) for x in "$(PYTHON_MIN)".split(".")); sys.exit(sys.version_info[:2] < want)' 2>/dev/null || { \
	  echo "loupe needs Python $(PYTHON_MIN) or newer; $(VENV_PYTHON) is $$($(VENV_PYTHON) --version 2>/dev/null || echo 'not found')." >&2; \
	  echo "Install Python $(PYTHON_MIN) and run: make install PYTHON=python$(PYTHON_MIN) (after rm -rf $(VENV) if it was made with the old one)" >&2; \
	  exit 1; }

data:
	scripts/install-data.sh
	scripts/install-gentl-producers.sh $(BIN)/python

demo: install
	$(BIN)/loupe demo

# the test directories run in parallel, one directory per worker at a time (see tests/conftest.py)
TEST_WORKERS ?= auto
test: install data
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) tests

bench: install data
	$(BIN)/python bench/host_overhead.py

screenshots: install
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m loupe_gui.screenshots screenshots/
	$(BIN)/python -m loupe_hmi.screenshots screenshots/

clean:
	rm -rf $(VENV) loupe-demo build *.egg-info plugins/*/*.egg-info
