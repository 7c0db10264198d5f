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
	$(PY) -m quantkit.hub commands $(PUBLISH_CONFIG) --dir $(PUBLISH_DIR) --step $(or $(STEP),all) \
	  $(if $(ONLY),--only $(ONLY)) $(if $(MODEL),--model $(MODEL)) $(if $(filter 1,$(PUSH)),--push) \
	  > $(PUBLISH_DIR)/publish.sh
	sh -x $(PUBLISH_DIR)/publish.sh
