# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export LSTMAD_HOME ?= $(CURDIR)/.lstmad
# the suite's test modules spread over this many processes (pytest-xdist), each module whole on one of them so
# that its fixtures are built once
TEST_WORKERS ?= 2

.PHONY: demo test install clean check-tools

check-tools:
	@command -v java >/dev/null 2>&1 || [ -n "$$JAVA_HOME" ] || { \
	  echo "lstmad needs a Java 17+ runtime for Spark: install one (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "lstmad needs Python 3.11+: set PYTHON=/path/to/python3.11"; exit 1; }

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory check-tools
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@$(MAKE) --no-print-directory check-tools
	$(BIN)/lstmad demo --conf conf/demo.yaml

test: $(STAMP)
	@$(MAKE) --no-print-directory check-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) .lstmad .pytest_cache
