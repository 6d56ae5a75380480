# One command per job; each installs what it needs first (quick when already there).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# g++ and python3-dev: inductor compiles the UNet's CPU kernels (`--compile`, tests/test_cpu_compile.py).
APT_PACKAGES := python3-qgis qgis-providers qgis gdal-bin xvfb python3-venv g++ python3-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export QT_QPA_PLATFORM ?= offscreen

# Arguments for `make run`, overridable: make run PROMPT="..." BBOX=... CRS=...
PROMPT ?= dense residential area with tree-lined streets and a park
BBOX ?= 447000,5411000,447300,5411300
CRS ?= EPSG:32632
LEVEL ?= 17
SEED ?= 42
OUT ?= output/scene.tif
RUN_ARGS ?=

.PHONY: install test run bench lint clean package deploy validate screenshots test-qgis-newer \
	bench-gpu bench-gpu-wheels

install: $(STAMP)

/usr/bin/python3:
	$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q python3

# The venv is made from Debian's Python so PyQGIS (system site-packages) is importable in tests.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "Installing system packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade-strategy only-if-needed -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

run: install
	$(VENV)/bin/text2earth generate --bbox $(BBOX) --crs $(CRS) --level $(LEVEL) \
	  --prompt "$(PROMPT)" --seed $(SEED) --out $(OUT) --overwrite --demo-fallback $(RUN_ARGS)

# The engine as a machine without an NVIDIA GPU gets it: the CPU build of torch (the set-up's
# choose_torch_build), for the first-image bench's memory rows (the CUDA build maps ~400 MiB of
# CUDA libraries and triton into every process, GPU or not). The pinned torch's CPU build from
# torch's index; where that cannot be reached (our build machines), the CPU build pip finds on
# the local disk, said when it happens (the rows name their torch). Only what `serve` and a job
# on real weights import: torchvision, open_clip, ray and the FID packages would pull the CUDA
# build back and are not imported there (open_clip only makes the demo weights).
CPU_TORCH_VENV := build/bench-cpu-torch
CPU_TORCH_PY := $(CPU_TORCH_VENV)/bin/python
# A stamp, not bin/python: that is a link, and make dates a link by the file it points to.
CPU_TORCH_STAMP := $(CPU_TORCH_VENV)/.installed
TORCH_PIN := $(shell sed -n 's/^torch==//p' requirements.txt)
TORCH_CPU_LOCAL ?= 2.13.0+cpu
CPU_TORCH_SKIP := torch|torchvision|open_clip_torch|ray|torchmetrics|torch-fidelity|lightning-utilities

bench: install $(CPU_TORCH_STAMP)
	$(PY) -m engine.bench --cpu-torch-python $(CPU_TORCH_PY)
	$(PY) -m engine.bench memory

$(CPU_TORCH_STAMP): requirements.txt pyproject.toml Makefile | $(STAMP)
	rm -rf $(CPU_TORCH_VENV) && /usr/bin/python3 -m venv $(CPU_TORCH_VENV)
	$(CPU_TORCH_PY) -m pip install -q --retries 1 --timeout 20 "torch==$(TORCH_PIN)+cpu" \
	  --index-url https://download.pytorch.org/whl/cpu \
	  || { echo "bench: torch $(TORCH_PIN)+cpu is not to be had from torch's index here;" \
	       "the CPU-build rows run torch $(TORCH_CPU_LOCAL) from the local disk"; \
	       $(CPU_TORCH_PY) -m pip install -q "torch==$(TORCH_CPU_LOCAL)"; }
	grep -vE '^($(CPU_TORCH_SKIP))==' requirements.txt > $(CPU_TORCH_VENV)/requirements.txt
	$(CPU_TORCH_PY) -m pip install -q -r $(CPU_TORCH_VENV)/requirements.txt
	$(CPU_TORCH_PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(CPU_TORCH_PY) -c "import torch; assert torch.version.cuda is None, torch.__version__"
	touch $(CPU_TORCH_STAMP)

# The GPU figures (engine.bench.gpu) on a lent device machine, whose command is `make bench-gpu`
# alone (docs: README, "GPU figures"). That machine has torch, transformers, tokenizers,
# huggingface_hub, safetensors, accelerate, torchvision, timm and regex, and no registry: the
# rest of the bench's imports travel as wheels in .whl/ (ignored; name it in the call's carry),
# made here by `make bench-gpu-wheels`. Its Python is 3.12; these wheels are pure Python or
# abi3, so the same set also installs on this machine's Python 3.11.
BENCH_GPU_WHEELS := $(shell grep -E '^(diffusers|open_clip_torch)==' requirements.txt) \
	ftfy==6.3.1 wcwidth==0.9.5
BENCH_GPU_PY ?= python3
BENCH_GPU_SITE ?= /tmp/site
BENCH_GPU_ARGS ?=
bench-gpu-wheels:
	rm -rf .whl && mkdir .whl
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(BENCH_GPU_WHEELS)
	@du -ch .whl/*.whl

bench-gpu:
	@export PYTHONPATH=$(BENCH_GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1; \
	if ! $(BENCH_GPU_PY) -c "from diffusers import UNet2DConditionModel, AutoencoderKL; import open_clip.tokenizer, ftfy" 2>/dev/null; then \
	  ls .whl/*.whl >/dev/null 2>&1 || { echo "bench-gpu: diffusers and open_clip are not" \
	    "importable and .whl/ holds no wheels: run 'make bench-gpu-wheels' and carry .whl"; \
	    exit 1; }; \
	  echo "bench-gpu: installing $$(ls .whl | tr '\n' ' ')into $(BENCH_GPU_SITE)"; \
	  $(BENCH_GPU_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
	    --upgrade --target $(BENCH_GPU_SITE) .whl/*.whl || exit; \
	fi; \
	$(BENCH_GPU_PY) -m engine.bench gpu $(BENCH_GPU_ARGS)

lint: install
	$(PY) -m ruff check engine text2earth_qgis tests tools

clean:
	rm -rf $(VENV) output .pytest_cache

# The QGIS plugin zip: the plugin package, its metadata and LICENSE, and the engine's source
# with its pinned requirements in engine_source/, which "Set up engine..." installs into the
# engine's own venv together with the plugin's own core (QGIS never imports it). The engine's
# benchmarks are development tools and stay out; engine/model/tiny_checkpoint.py stays: it
# makes the demo weights.
ENGINE_SOURCE := build/plugin/text2earth_qgis/engine_source
package:
	rm -rf build/plugin dist/text2earth_qgis.zip && mkdir -p build/plugin dist
	cp -rL text2earth_qgis build/plugin/
	cp LICENSE build/plugin/text2earth_qgis/
	mkdir -p $(ENGINE_SOURCE)
	cp -r engine pyproject.toml requirements.txt $(ENGINE_SOURCE)/
	rm -rf $(ENGINE_SOURCE)/engine/bench
	find build/plugin -name __pycache__ -prune -exec rm -rf {} +
	find build/plugin -name '*.pyc' -delete
	cd build/plugin && /usr/bin/python3 -m zipfile -c ../../dist/text2earth_qgis.zip text2earth_qgis
	@echo dist/text2earth_qgis.zip

# The QGIS plugin repository's upload checks on the zip: required files and metadata, no
# duplicates or development scripts, Bandit and detect-secrets. RELEASE=1 also refuses
# placeholder release facts (homepage, tracker, repository, email in metadata.txt).
validate: install package
	$(PY) tools/validate_package.py dist/text2earth_qgis.zip $(if $(RELEASE),--release)

# Development install: link the plugin folder into the QGIS profile (edits show on reload).
QGIS_PLUGINS ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins
deploy:
	mkdir -p "$(QGIS_PLUGINS)"
	ln -sfn "$(CURDIR)/text2earth_qgis" "$(QGIS_PLUGINS)/text2earth_qgis"
	@echo "linked into $(QGIS_PLUGINS); enable Text2Earth in Plugins > Manage and Install"

# The README's screenshots: the real QGIS desktop on a virtual 1366 x 768 screen, the dock
# beside a demo-weight result (QGIS runs tests/qgis_desktop_screenshot.py itself).
screenshots: install
	rm -rf build/screenshot-profile && mkdir -p build/screenshot-profile
	HF_HUB_OFFLINE=1 T2E_ROOT=$(CURDIR) T2E_SHOT_DIR=$(CURDIR)/build/screenshot-profile \
	  QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1366x768x24" qgis --nologo \
	  --noversioncheck --noplugins --profiles-path build/screenshot-profile \
	  --code tests/qgis_desktop_screenshot.py
	@cat build/screenshot-profile/desktop_report.json

# The plugin's probes in newer QGIS: Debian chroots built from Debian's archive and cached in
# build/chroots (trixie: QGIS 3.40 on Python 3.13; sid: QGIS 3.44 on Python 3.14). Needs root;
# the first build downloads about 1 GB per suite. Not part of `make test`.
NEWER_QGIS ?= trixie,sid
test-qgis-newer: install
	$(SUDO) env T2E_NEWER_QGIS=$(NEWER_QGIS) $(PY) -m pytest -q -s tests/test_qgis_newer.py
