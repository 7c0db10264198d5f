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

# The embedded default job: a tiny ERNIE-4.5-VL built with the real transformers class,
# quantized to 8, 4 and 2 bits.
demo: $(BUILD)/.installed $(TINY)/config.json
	quantkit inspect $(TINY)
	@for b in 8 4 2; do \
	  quantkit quantize $(TINY) --bits $$b --method rtn --out $(VARIANTS)/tiny-ernie45-vl-w$$b-rtn --overwrite || exit 1; \
	done
	@echo "variants:"; ls -d $(PWD)/$(VARIANTS)/*

test: $(BUILD)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(BUILD)
