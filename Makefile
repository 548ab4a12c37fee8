# recam: one target per stage, plus demo / test.  `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXP    ?= demo
# Extra Hydra overrides for any stage target, e.g. make cam ARGS="cam.epochs=2"
ARGS   ?=
RUN    := $(PY) -m recam.train experiment=$(EXP) $(ARGS)

.PHONY: install test test-all demo all prepare cam recam seeds seeds-cam eval_seeds eval_seeds-cam report clean bench \
        ir_labels irn masks masks-crf eval_masks eval_masks-crf

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "not gpu"

prepare: install
	$(RUN) stage=prepare

cam: install
	$(RUN) stage=cam

recam: install
	$(RUN) stage=recam

seeds: install
	$(RUN) stage=seeds seeds.method=recam

seeds-cam: install
	$(RUN) stage=seeds seeds.method=cam

eval_seeds: install
	$(RUN) stage=eval_seeds eval_seeds.method=recam

eval_seeds-cam: install
	$(RUN) stage=eval_seeds eval_seeds.method=cam

ir_labels: install
	$(RUN) stage=ir_labels

irn: install
	$(RUN) stage=irn

masks: install
	$(RUN) stage=masks masks.method=irn

masks-crf: install
	$(RUN) stage=masks masks.method=crf

eval_masks: install
	$(RUN) stage=eval_masks eval_masks.method=irn

eval_masks-crf: install
	$(RUN) stage=eval_masks eval_masks.method=crf

report: install
	$(RUN) stage=report

demo: install
	$(RUN) stage=all

all: install
	$(RUN) stage=all

clean:
	rm -rf outputs/$(EXP)
