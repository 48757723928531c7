PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SYSTEM := $(VENV)/.system-deps

# Debian packages the tests run for real: Prometheus and promtool (metrics, alert rules,
# dashboard queries), docker-compose (validates docker-compose.yml offline), a JDK with
# Maven for Apache Kafka and Neo4j (java/, fetched from Maven Central by `make jars`), kcat,
# the standard command-line Kafka client the README's quick start uses (tests/test_clients.py),
# and Chromium with CJK fonts for the pages' browser tests (Playwright drives the system browser).
APT_PACKAGES := prometheus docker-compose openjdk-17-jdk-headless maven kcat chromium fonts-noto-cjk
APT_COMMANDS := promtool prometheus docker-compose java mvn kcat chromium
JARS := java/kafka/target/lib/.built java/neo4j/target/lib/.built

.PHONY: test check test-repeat demo install system-deps jars clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Re-checked when this file changes, so a package added here reaches machines installed before.
$(SYSTEM): Makefile
	@missing=""; for c in $(APT_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	@mkdir -p $(VENV) && touch $(SYSTEM)

install: $(STAMP)

$(JARS): java/pom.xml java/kafka/pom.xml java/neo4j/pom.xml $(wildcard java/neo4j/src/main/java/idgraph/neo4j/*.java) | $(SYSTEM)
	cd java && mvn -q -B package
	touch $(JARS)

jars: $(JARS)

system-deps: $(SYSTEM)

# Types (mypy, [tool.mypy]) and the one-way import layers (import-linter, [tool.importlinter])
# are checked before the tests run; configuration in pyproject.toml.
check: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) $(SYSTEM) $(JARS) check
	$(BIN)/python -m pytest

# Flaky-test hunt: the whole suite N times in a row (default 5), every run to the end; fails if
# any run failed. LOAD=1 runs a CPU hog on every core beside it, as a busy CI machine would.
N ?= 5
test-repeat: $(STAMP) $(SYSTEM) $(JARS)
	@hogs=""; if [ -n "$(LOAD)" ]; then for c in $$(seq $$(nproc)); do nice yes >/dev/null & hogs="$$hogs $$!"; done; fi; \
	trap 'kill $$hogs 2>/dev/null' EXIT; red=0; \
	for i in $$(seq $(N)); do echo "== run $$i of $(N)"; $(BIN)/python -m pytest -q -p no:cacheprovider || red=$$((red + 1)); done; \
	echo "== $$red of $(N) runs failed"; [ $$red -eq 0 ]

# The demo runs Apache Kafka from the jars (`idgraph demo --broker embedded` needs none).
demo: $(STAMP) $(JARS)
	$(BIN)/idgraph demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .import_linter_cache build *.egg-info java/*/target
