# histoviz: `make demo` and `make test` bootstrap everything from a fresh clone (idempotent).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.histoviz-installed
# Qt/napari need an X server: tests run under Xvfb (a real viewer, not offscreen).
APT_PKGS := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
            libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
            libxcb-shape0 libxcb-cursor0 libxcb-xkb1 libdbus-1-3 libfontconfig1 libglib2.0-0 \
            chromium libturbojpeg0
PYTEST_ARGS ?=

PEERS  := .peers

.PHONY: demo readme test bench bench-peers lint venv system-deps clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[all,test,bench]'
	@touch $(STAMP)

# each package is checked on its own (dpkg -s, fast, every run): one missing library (e.g.
# libturbojpeg0 for the DICOM tests) is installed even when xvfb-run and chromium are there
system-deps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then \
	  echo "system packages present"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "not a Debian/Ubuntu system: install the equivalents of:$$missing"; \
	elif [ "$$(id -u)" = "0" ]; then \
	  echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null; \
	else \
	  echo "some tests need: sudo apt-get install$$missing"; \
	fi

demo: $(STAMP)
	$(BIN)/histoviz demo --out demo_out

# the README's generated tables (<!-- generated:KEY --> blocks) from docs/results/KEY.json;
# after `make demo`, its demo_out/results.json becomes docs/results/demo.json first
readme: $(STAMP)
	$(BIN)/python docs/gen_readme.py $(if $(wildcard demo_out/results.json),--take demo=demo_out/results.json)

test: $(STAMP) system-deps
	@if command -v xvfb-run >/dev/null 2>&1; then \
	  xvfb-run -a -s "-screen 0 1920x1200x24" $(BIN)/python -m pytest $(PYTEST_ARGS); \
	else \
	  $(BIN)/python -m pytest -m "not gui" $(PYTEST_ARGS); \
	fi

bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results

# TIAToolbox 2.1 pins older torch/numpy/dask than histoviz: install it beside the venv with
# --no-deps (plus the three imports its WSIReader needs) so the peer benchmark can time it
bench-peers: $(STAMP)
	@test -d $(PEERS)/tiatoolbox || $(BIN)/python -m pip install -q --no-deps --target $(PEERS) \
	  tiatoolbox opencv-python-headless SimpleITK shapely
	$(BIN)/python bench/bench_peers.py --out bench/results --tia-path $(PEERS)

lint: $(STAMP)
	$(BIN)/ruff check histoviz napari_plugin tests bench app.py

clean:
	rm -rf demo_out bench/results .pytest_cache $(PEERS)
