# recam: one target per stage, plus demo / test.  `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXP    ?= demo
# Extra Hydra overrides for any stage target, e.g. make cam ARGS="cam.epochs=2"
ARGS   ?=
RUN    := $(PY) -m recam.train experiment=$(EXP) $(ARGS)

.PHONY: pretrain viz sweep-cam-methods spg seeds-spg eval_loc eval_loc-cam wsol study-thresholds test-gpu gpu-bench
.PHONY: install lint format test test-all demo all prepare cam recam seeds seeds-cam eval_seeds eval_seeds-cam seg seg-gt eval_seg eval_seg-gt report clean bench \
        ir_labels irn masks masks-crf eval_masks eval_masks-crf sweep-lambda sweep-thresholds summary

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

# ruff: lint (pyflakes, pycodestyle, bugbear) and the formatter's check; `make format` applies it.
lint: install
	$(PY) -m ruff check recam tests scripts
	$(PY) -m ruff format --check recam tests scripts

format: install
	$(PY) -m ruff format recam tests scripts

test-all: install
	$(PY) -m pytest -q -m "not gpu"

# GPU tests (tests/gpu, marked gpu): every stage on tiny data on CUDA, AMP, channels_last, the walk
# and the seeds on CUDA vs CPU, NCCL DDP, GPU checkpoints on CPU. They skip without CUDA.
test-gpu: install
	$(PY) -m pytest -q -m gpu tests/gpu -rs

# The prepared GPU benchmark (docs/performance.md): VOC-sized synthetic set, every stage, JSON + markdown.
# GPU_BENCH_ARGS="--tiny" runs it on CPU in seconds.
GPU_BENCH_ARGS ?=
gpu-bench: install
	$(PY) scripts/gpu_bench.py --out bench/gpu $(GPU_BENCH_ARGS)

prepare: install
	$(RUN) stage=prepare

pretrain: install
	$(RUN) stage=pretrain

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

seg: install
	$(RUN) stage=seg seg.labels=pseudo

seg-gt: install
	$(RUN) stage=seg seg.labels=gt

eval_seg: install
	$(RUN) stage=eval_seg eval_seg.labels=pseudo

eval_seg-gt: install
	$(RUN) stage=eval_seg eval_seg.labels=gt

report: install
	$(RUN) stage=report

demo: install
	$(RUN) stage=all

all: install
	$(RUN) stage=all

# Sweeps (Hydra multirun, configs/sweep/*.yaml): each runs the base experiment's missing stages
# first, then one run per value under outputs/sweep_<name>/ reading the base's artifacts through
# run.inputs, then `stage=summary` prints the table and writes summary.{md,csv,png} there.
BASE := outputs/$(EXP)
# The swept values (each overrides the list in its configs/sweep/*.yaml, which holds the spec's VOC
# range). The demo's from-scratch CAMs put its thresholds higher (configs/experiment/demo.yaml),
# so its sweeps centre on the demo's own values.
LAMBDAS ?= 0.25,0.5,1.0,2.0
ifeq ($(EXP),demo)
SEED_T ?= 0.55,0.60,0.65,0.70,0.75,0.80
CRF_FG ?= 0.60,0.70,0.80
RW_BG  ?= 0.50,0.55,0.60,0.65,0.70
else
SEED_T ?= 0.15,0.18,0.21,0.24,0.27,0.30
CRF_FG ?= 0.30,0.35,0.40
RW_BG  ?= 0.20,0.25,0.28,0.31,0.35
endif

sweep-lambda: install
	$(RUN) stage=all 'stage.steps=[prepare,pretrain,cam]'
	$(RUN) sweep=lambda recam.loss_weight=$(LAMBDAS) +run.inputs.prepare=$(BASE)/prepare +run.inputs.cam=$(BASE)/cam
	$(RUN) stage=summary summary.runs=outputs/sweep_lambda summary.key=recam.loss_weight

sweep-thresholds: install
	$(RUN) stage=all
	$(RUN) sweep=seed_threshold eval_seeds.threshold=$(SEED_T) +run.inputs.prepare=$(BASE)/prepare +run.inputs.seeds=$(BASE)/seeds
	$(RUN) sweep=crf_threshold ir_labels.fg_threshold=$(CRF_FG) +run.inputs.prepare=$(BASE)/prepare +run.inputs.seeds=$(BASE)/seeds +run.inputs.cam=$(BASE)/cam
	$(RUN) sweep=rw_threshold masks.bg_threshold=$(RW_BG) +run.inputs.prepare=$(BASE)/prepare +run.inputs.seeds=$(BASE)/seeds +run.inputs.irn=$(BASE)/irn
	$(RUN) stage=summary summary.runs=outputs/sweep_seed_threshold summary.key=eval_seeds.threshold
	$(RUN) stage=summary summary.runs=outputs/sweep_crf_threshold summary.key=ir_labels.fg_threshold
	$(RUN) stage=summary summary.runs=outputs/sweep_rw_threshold summary.key=masks.bg_threshold

# One table over every run under outputs/ (or SUMMARY=<folder>)
SUMMARY ?= outputs
summary: install
	$(RUN) stage=summary summary.runs=$(SUMMARY)

# CAM family (docs/cams.md): pictures of every method for a few images; every method as a seed
# generator on a subset (cam_methods.split / max_images / scales), one table of mIoU, time, memory.
viz: install
	$(RUN) stage=visualize

sweep-cam-methods: install
	$(RUN) stage=all 'stage.steps=[prepare,pretrain,cam]'
	$(RUN) stage=cam_methods

# WSOL (docs/wsol.md): SPG training and seeds, box localization of every seed method, one table
# (the demo's cam / recam and their seeds are reused when present).
spg: install
	$(RUN) stage=spg

seeds-spg: install
	$(RUN) stage=seeds seeds.method=spg

eval_loc: install
	$(RUN) stage=eval_loc eval_loc.method=spg

eval_loc-cam: install
	$(RUN) stage=eval_loc eval_loc.method=cam

wsol: install
	$(RUN) stage=all 'stage.steps=[prepare,pretrain,cam,seeds/cam,eval_seeds/cam,eval_loc/cam,recam,seeds/recam,eval_seeds/recam,eval_loc/recam]'
	$(RUN) stage=wsol

# GT-free thresholds (docs/thresholds.md): selectors against the GT oracle on small synthetic runs
# -> bench/thresholds.json (STUDY_ARGS="--seeds 0 1 2 3 --n-train 320" for a bigger study).
# `make demo EXP=demo_auto` runs the demo with every threshold auto.
study-thresholds: install
	$(PY) scripts/study_thresholds.py $(STUDY_ARGS)

clean:
	rm -rf outputs/$(EXP)
