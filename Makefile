# irecon: `make demo` and `make test` both create .venv when it is missing and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
# twixtools' source distribution ships real Siemens raw data (example_data/gre.dat, epi.dat) for the import tests.
TWIXTOOLS_SDIST := 0.24
TWIX_EXAMPLES := .cache/twixtools/twixtools-$(TWIXTOOLS_SDIST)/example_data

.PHONY: install demo test test-fast test-tools lint gpu-check gpu-compare bench pretrained clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev,raw,tensorboard,onnx]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) lint test-tools
	$(BIN)/python -m pytest -q

# The quick loop while editing: everything but the tests marked slow (torchrun, README, subprocesses,
# whole memory-measurement runs); make test runs them all.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# External tools the suite checks against, installed the way the README tells a user; a test whose
# tool is missing skips and says why. dcm2niix is Debian's package (needs root and apt-get).
test-tools: $(STAMP)
	@command -v dcm2niix >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcm2niix; } >/dev/null 2>&1; } || \
		echo "dcm2niix not installed (needs root and apt-get): its tests will skip"
	@[ -f $(TWIX_EXAMPLES)/gre.dat ] || { $(PIP) download --quiet --no-deps --no-binary :all: twixtools==$(TWIXTOOLS_SDIST) \
		-d .cache/twixtools && tar -xzf .cache/twixtools/twixtools-$(TWIXTOOLS_SDIST).tar.gz -C .cache/twixtools; } || \
		echo "twixtools $(TWIXTOOLS_SDIST) sdist not fetched: the tests on real Siemens raw data will skip"

# The shape of the code: lint, formatting, and the import layers (cli -> commands -> ... -> base).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

# The GPU check: one script, a Markdown + JSON report in gpu-check-report/. Without CUDA it runs the
# CPU parts, says so in one line and exits 0.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out gpu-check-report

demo: $(STAMP)
	$(BIN)/python benchmarks/demo.py

# The paper-size comparison for a GPU: knee-size synthetic data (640x368 k-space, 320x320 targets),
# paper-2d against the paper's RIM and fastMRI's U-Net, 3 seeds, best epoch on its own volumes.
GPU_COMPARE := gpu-compare-output
gpu-compare: $(STAMP)
	$(BIN)/python -m irecon.cli synth $(GPU_COMPARE)/data/train --volumes 32 --slices 8 --kspace-size 640 368 --recon-size 320 320 --seed 0 --overwrite
	$(BIN)/python -m irecon.cli synth $(GPU_COMPARE)/data/val --split val --volumes 6 --slices 8 --kspace-size 640 368 --recon-size 320 320 --seed 1 --overwrite
	$(BIN)/python -m irecon.cli synth $(GPU_COMPARE)/data/select --split val --volumes 4 --slices 8 --kspace-size 640 368 --recon-size 320 320 --seed 3 --overwrite
	$(BIN)/python benchmarks/compare.py $(GPU_COMPARE)/data/train $(GPU_COMPARE)/data/val --select $(GPU_COMPARE)/data/select \
		--out $(GPU_COMPARE)/out --models paper-2d rim unet --steps 1280 --seeds 0 1 2 --batch-size 1 --device cuda --overwrite

# The bundled weights (src/irecon/models/pretrained/): synthetic data, fixed seeds, steps and one
# thread, then held-out scores against zero-filled (docs/pretrained.md). About an hour on 2 CPU cores.
pretrained: $(STAMP) test-tools
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/pretrained.py

bench: $(STAMP)
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 $(BIN)/python benchmarks/engine.py
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 $(BIN)/python benchmarks/official_config.py

clean:
	rm -rf $(VENV) demo-output gpu-check-report pretrained-output $(GPU_COMPARE)
