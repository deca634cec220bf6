# wiregate: `make demo` runs the whole system on embedded defaults, `make test` runs the whole suite.
# Each target creates .venv and installs what it needs (Debian packages only when root and missing).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEBS   := haproxy nginx libnginx-mod-stream wireguard-go wireguard-tools iperf3 wrk curl iproute2 openssl bind9 bind9-dnsutils pebble caddy

.PHONY: demo test bench venv debs clean

$(VENV)/.installed: pyproject.toml src/wiregate/datapath/_pump.c  # the C pump is built by the install
	@sh scripts/install-debs.sh python3-venv  # Debian's python3 makes no venv without it
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.installed

debs:
	@sh scripts/install-debs.sh $(DEBS)

demo: venv  # the demo needs only ip(8) and Python; the peers of the tests are not installed for it
	@sh scripts/install-debs.sh iproute2
	$(BIN)/wiregate demo

test: venv debs  # lint and type-check first: a ruff finding or a mypy error fails `make test` before any test runs
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/wiregate
	$(BIN)/python -m pytest -q

bench: venv debs
	$(BIN)/wiregate bench all

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .hypothesis
