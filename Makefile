# quantkit: the README's two commands are `make demo` and `make test`; both install first.
PY ?= python
BUILD ?= build
TINY := $(BUILD)/tiny-ernie45-vl
VARIANTS := $(BUILD)/variants
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast clean

# Re-installs only when pyproject.toml changes (pip itself is slow to say "already satisfied").
$(BUILD)/.installed: pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	@mkdir -p $(BUILD) && touch $@

install: $(BUILD)/.installed

$(TINY)/config.json: | $(BUILD)/.installed
	quantkit build-tiny vl --out $(TINY)

# The embedded default job: a tiny ERNIE-4.5-VL built with the real transformers class, calibrated
# once on the shipped multimodal set, quantized with GPTQ to 8, 4 and 2 bits.
demo: $(BUILD)/.installed $(TINY)/config.json
	quantkit inspect $(TINY)
	quantkit calibrate $(TINY) --out $(BUILD)/calib-tiny-ernie45-vl --overwrite
	@for b in 8 4 2; do \
	  quantkit quantize $(TINY) --bits $$b --calib $(BUILD)/calib-tiny-ernie45-vl --out $(VARIANTS)/tiny-ernie45-vl-w$$b --overwrite || exit 1; \
	done
	@for b in 8 4 2; do \
	  quantkit package $(VARIANTS)/tiny-ernie45-vl-w$$b --license apache-2.0 || exit 1; \
	  quantkit push $(VARIANTS)/tiny-ernie45-vl-w$$b --repo quantkit-demo/tiny-ernie45-vl-GPTQ --revision auto --dry-run || exit 1; \
	done
	@echo "variants:"; ls -d $(CURDIR)/$(VARIANTS)/*

test: $(BUILD)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(BUILD)

# Publish the variants listed in publish/variants.yaml: calibrate once, then quantize, profile,
# package, verify and push each one: the steps .github/workflows/publish.yml runs. The push is a
# dry run unless PUSH=1 (then HF_TOKEN or a saved `hf auth login` is needed; HF_ENDPOINT is
# honoured). MODEL=DIR rehearses on another checkpoint (e.g. MODEL=build/tiny-ernie45-vl after
# `make demo`; its push stays a dry run); ONLY=ID builds one variant; STEP=calibrate|variant runs one
# stage (CI runs them as separate jobs). Work goes to PUBLISH_DIR/<base model name>/.
PUBLISH_CONFIG ?= publish/variants.yaml
PUBLISH_DIR ?= $(BUILD)/publish

.PHONY: publish
publish: $(BUILD)/.installed
	@mkdir -p $(PUBLISH_DIR)
	$(PY) -m quantkit.publish.plan commands $(PUBLISH_CONFIG) --dir $(PUBLISH_DIR) --step $(or $(STEP),all) \
	  $(if $(ONLY),--only $(ONLY)) $(if $(MODEL),--model $(MODEL)) $(if $(filter 1,$(PUSH)),--push) \
	  > $(PUBLISH_DIR)/publish.sh
	sh -x $(PUBLISH_DIR)/publish.sh

# Benchmark at the real ERNIE-4.5-VL-28B-A3B layer shapes (issue 7): GPTQ 4-bit layer by layer on a
# synthetic bf16 checkpoint with the real shapes (generated once, ~6.5 GB, cached under
# $(BENCH_CACHE)), one process per configuration, 16k calibration tokens; then folds in the accuracy
# side (`make profile`: GPTQ vs RTN per bit width on the trained reference, run first, ~1 min).
# Writes bench/results/realshape-moe<L>.json, summary-moe<L>.md and summary.md (the latest run);
# see bench/README.md. The defaults (one MoE layer) take ~6-10 min on the 2-core box; the figures in
# bench/README.md come from `make bench BENCH_LAYERS=1,2,3 BENCH_DENSE=1` (~15 min there, plus the
# one-time generation of the checkpoint).
# Not part of `make test` / CI: tests/test_bench_smoke.py runs the same code at a tiny size.
# Overrides: BENCH_LAYERS (MoE layer counts, one process each: 1,2,3 shows RSS against depth),
# BENCH_TOKENS, BENCH_DENSE=1 (also the dense layer 0), BENCH_LOOP=0 (skip batched vs per-expert
# loop), BENCH_VIT=0, BENCH_ACCURACY=0 (skip `make profile`), BENCH_THREADS (default: the core
# count), BENCH_KEEP=0 (delete the generated checkpoint afterwards; `make bench-clean` does too),
# BENCH_ALLOC=0 (skip the allocator's cost at the real shapes, bench/allocate_cost.py, ~3 min, and the
# llama.cpp recipe comparison on the text reference, bench/llama_recipes.py, ~3 min).
BENCH_LAYERS ?= 1
BENCH_TOKENS ?= 16384
BENCH_DENSE ?= 0
BENCH_LOOP ?= 1
BENCH_VIT ?= 1
BENCH_ACCURACY ?= 1
BENCH_KEEP ?= 1
BENCH_ALLOC ?= 1
BENCH_THREADS ?= $(shell nproc)
BENCH_CACHE ?= $(or $(TMPDIR),/tmp)/quantkit-bench
BENCH_ENV = OMP_NUM_THREADS=$(BENCH_THREADS) BENCH_THREADS=$(BENCH_THREADS) BENCH_LAYERS=$(BENCH_LAYERS) \
  BENCH_TOKENS=$(BENCH_TOKENS) BENCH_DENSE=$(BENCH_DENSE) BENCH_LOOP=$(BENCH_LOOP) BENCH_VIT=$(BENCH_VIT) \
  BENCH_KEEP=$(BENCH_KEEP) BENCH_CACHE=$(BENCH_CACHE)

.PHONY: bench bench-smoke bench-clean bench-checkpoint
bench: $(BUILD)/.installed
	@date +%s > $(BUILD)/.bench-started
	@if [ "$(BENCH_ACCURACY)" = 1 ]; then $(MAKE) --no-print-directory profile; fi
	$(BENCH_ENV) BENCH_ACCURACY_SINCE=$$(cat $(BUILD)/.bench-started) \
	  BENCH_COMMAND="make bench BENCH_LAYERS=$(BENCH_LAYERS) BENCH_TOKENS=$(BENCH_TOKENS) BENCH_DENSE=$(BENCH_DENSE) BENCH_THREADS=$(BENCH_THREADS)" \
	  $(PY) -m bench.run_bench
	@if [ "$(BENCH_ALLOC)" = 1 ]; then OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) -m bench.allocate_cost --threads $(BENCH_THREADS) \
	  && $(PY) -m bench.llama_recipes; fi

# The pieces of issue 15's benchmark alone: the allocator's cost at the real shapes (against a quarter
# of the 4-bit quantize run in bench/results), and the allocated GGUF against llama.cpp's own recipes.
.PHONY: bench-alloc
bench-alloc: $(BUILD)/.installed
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) -m bench.allocate_cost --threads $(BENCH_THREADS)
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) -m bench.sensitivity_cost --tokens 4096 --threads $(BENCH_THREADS)
	$(PY) -m bench.llama_recipes

# How low any allocation can go at uniform 3-bit experts' size on the text reference, measured per
# unit and width (llama.cpp and vLLM units), next to the allocator's own choice (~4 min).
.PHONY: bench-bound
bench-bound: $(BUILD)/.installed
	OMP_NUM_THREADS=1 $(PY) -m bench.allocation_bound

# Whether the allocator's objective ranks the text reference's units as the model does (~25 s).
.PHONY: bench-sensitivity
bench-sensitivity: $(BUILD)/.installed
	OMP_NUM_THREADS=1 $(PY) -m bench.unit_sensitivity

# The same path at tiny shapes (seconds): results in $(BUILD)/bench-smoke.
bench-smoke: $(BUILD)/.installed
	OMP_NUM_THREADS=1 $(PY) -m bench.run_bench --size smoke --layers 1,2 --tokens 1024 --seq-len 256 --threads 1 \
	  --no-vit --cache-root $(BUILD)/bench-cache --out $(BUILD)/bench-smoke

bench-clean:
	rm -rf $(BENCH_CACHE)

# The per-layer checkpoint `--resume` takes, at the real 28B shapes (issue 17; about 10 s).
bench-checkpoint: $(BUILD)/.installed
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) -m bench.checkpoint_cost

# The memory / accuracy tradeoff (issues 4, 15) on the two trained reference models, both shipped
# (retrained by their scripts only if absent):
# - VL (quantkit/reference/trained): calibrate once on the task's calibration split, quantize to
#   8/4/3/2 bits with GPTQ and with RTN from profiles/, plus allocated variants (--target-size, vLLM
#   units, group 64) at the uniform 3-bit size and between uniform 2- and 4-bit; profile them all.
# - text (quantkit/reference/trained_text): the same as GGUF for llama.cpp with the budget profile
#   ernie45-moe-gguf-fit (uniform 4/3/2-bit routed experts, GPTQ and RTN, plus allocated variants), evaluated on
#   the table's eval queries.
# Reports: build/profile/report{,-text}/{report.md,report.json,tradeoff.png}. A few minutes on 2 cores.
TRAINED_REF := quantkit/reference/trained
TEXT_REF := quantkit/reference/trained_text
FIT_PROFILE := profiles/ernie45-moe-gguf-fit.yaml
PROFILE_DIR := $(BUILD)/profile
PV := $(PROFILE_DIR)/variants

.PHONY: profile profile-vl profile-text
profile: profile-vl profile-text

profile-vl: $(BUILD)/.installed
	@test -f $(TRAINED_REF)/model.safetensors || $(PY) scripts/train_reference.py --out $(TRAINED_REF)
	$(PY) -m quantkit.reference.task calib 32 $(PROFILE_DIR)/calib-set/samples.jsonl --answers half
	quantkit calibrate $(TRAINED_REF) --samples $(PROFILE_DIR)/calib-set/samples.jsonl --out $(PROFILE_DIR)/calib --overwrite
	@for b in 8 4 3 2; do \
	  quantkit quantize $(TRAINED_REF) --bits $$b --calib $(PROFILE_DIR)/calib --out $(PV)/trained-w$$b-gptq --overwrite || exit 1; \
	  quantkit quantize $(TRAINED_REF) --bits $$b --method rtn --out $(PV)/trained-w$$b-rtn --overwrite || exit 1; \
	done
	$(PY) scripts/allocation_sweep.py $(TRAINED_REF) --calib $(PROFILE_DIR)/calib --profile profiles/ernie45-vl-w4.yaml \
	  --low-profile profiles/ernie45-vl-w2.yaml --group-size 64 --out $(PV)/trained-alloc
	rm -rf $(PROFILE_DIR)/report
	quantkit profile $(TRAINED_REF) $(foreach b,8 4 3 2,$(PV)/trained-w$(b)-gptq $(PV)/trained-w$(b)-rtn) \
	  $(PV)/trained-alloc/alloc-* --out $(PROFILE_DIR)/report

profile-text: $(BUILD)/.installed
	@test -f $(TEXT_REF)/model.safetensors || $(PY) scripts/train_text_reference.py --out $(TEXT_REF)
	$(PY) -m quantkit.reference.trained_text calib 256 $(PROFILE_DIR)/text/calib.jsonl
	$(PY) -m quantkit.reference.trained_text eval 300 $(PROFILE_DIR)/text/eval.jsonl
	quantkit calibrate $(TEXT_REF) --samples $(PROFILE_DIR)/text/calib.jsonl --out $(PROFILE_DIR)/text/calib --overwrite
	@for b in 4 3 2; do \
	  quantkit quantize $(TEXT_REF) --profile $(FIT_PROFILE) --bits $$b --calib $(PROFILE_DIR)/text/calib --out $(PV)/text-w$$b-gptq --overwrite || exit 1; \
	  quantkit quantize $(TEXT_REF) --profile $(FIT_PROFILE) --bits $$b --method rtn --out $(PV)/text-w$$b-rtn --overwrite || exit 1; \
	done
	$(PY) scripts/allocation_sweep.py $(TEXT_REF) --calib $(PROFILE_DIR)/text/calib --profile $(FIT_PROFILE) --out $(PV)/text-alloc
	rm -rf $(PROFILE_DIR)/report-text
	quantkit profile $(TEXT_REF) $(foreach b,4 3 2,$(PV)/text-w$(b)-gptq $(PV)/text-w$(b)-rtn) \
	  $(PV)/text-alloc/alloc-* --eval $(PROFILE_DIR)/text/eval.jsonl --out $(PROFILE_DIR)/report-text
