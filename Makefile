# The README's two commands are `make sandbox` and `make test`; both install what is missing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sandbox test check bench bench-cluster bench-phase system-deps controlplane compat clean env

# Debian's prometheus package gives the real Prometheus server and promtool the tests and sandbox run.
system-deps:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built from the Go modules pinned in
# hack/controlplane/go.mod into ~/.cache/retrain-operator (RETRAIN_CACHE) when missing. K8S=1.34.4 builds another release.
controlplane:
	@bash hack/controlplane/build.sh >/dev/null

sandbox: system-deps $(STAMP) controlplane
	$(BIN)/python -m sandbox $(ARGS)

# This checkout's tools (retrain-operator, kubectl, pytest) first on PATH, in the current shell: eval "$$(make -s env)"
env:
	@echo 'export PATH="$(abspath $(BIN)):$$PATH"'

check: $(STAMP)
	$(BIN)/ruff format --check operator sandbox tests bench hack
	$(BIN)/ruff check operator sandbox tests bench hack
	$(BIN)/mypy
	$(BIN)/lint-imports

test: system-deps $(STAMP) controlplane
	$(BIN)/pytest -ra $(PYTEST_ARGS)

# The end-to-end suite on another Kubernetes release, e.g. the oldest supported: make compat K8S=1.34.4
compat: system-deps $(STAMP)
	@test -n "$(K8S)" || { echo "usage: make compat K8S=1.34.4" >&2; exit 2; }
	K8S=$(K8S) bash hack/controlplane/build.sh >/dev/null
	K8S=$(K8S) $(BIN)/pytest -ra -m integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py --loop-seconds 140 --intervals 60
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/upload.py

# The scale benchmark on the real stack: 1,000 and 10,000 policies against kube-apiserver + etcd, a real
# Prometheus and the operator process as the chart's ServiceAccount (bench/cluster.py); exits 1 on idle writes.
bench-cluster: system-deps $(STAMP) controlplane
	$(BIN)/python bench/cluster.py --sizes 1000 10000 --intervals 2

# Prometheus cost of scheduling in phase against rolling scheduling, side by side on the real stack (bench/phase.py).
bench-phase: system-deps $(STAMP) controlplane
	$(BIN)/python bench/phase.py --sizes 1000 10000 --templates 1 5 --intervals 2

clean:
	rm -rf $(VENV) .sandbox .pytest_cache .mypy_cache .ruff_cache
