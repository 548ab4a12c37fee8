"""`stage=all`: the steps of one experiment, in order. Below the stages (report reads it), above nothing."""

from __future__ import annotations

from pathlib import Path

from recam.errors import RecamInputError
from recam.rundir import RunDir

# Each step: the stage, then the overrides of its config slice (its method / labels).
PLAN: list[tuple[str, dict]] = [
    ("prepare", {}),
    ("pretrain", {}),  # only when a *.pretrained is synthetic (plan_steps)
    ("cam", {}),
    ("seeds", {"method": "cam"}),
    ("eval_seeds", {"method": "cam"}),
    ("eval_loc", {"method": "cam"}),
    ("recam", {}),
    ("seeds", {"method": "recam"}),
    ("eval_seeds", {"method": "recam"}),
    ("eval_loc", {"method": "recam"}),
    ("ir_labels", {}),
    ("irn", {}),
    ("masks", {"method": "crf"}),
    ("eval_masks", {"method": "crf"}),
    ("masks", {"method": "irn"}),
    ("eval_masks", {"method": "irn"}),
    ("seg", {"labels": "pseudo"}),
    ("eval_seg", {"labels": "pseudo"}),
    ("seg", {"labels": "gt"}),
    ("eval_seg", {"labels": "gt"}),
    ("visualize", {}),
]


def step_label(step: str, overrides: dict) -> str:
    """`seeds/cam`: the stage name, then the values of its plan overrides (its method)."""
    return "/".join([step, *(str(v) for v in overrides.values())])


def step_folder(rundir: RunDir, step: str, overrides: dict) -> Path:
    """The artifact folder of a plan step (`<stage>/<method>` or `<stage>`)."""
    return rundir.stage_dir(step, next(iter(overrides.values()), None))


# Steps that need object boxes (XML annotations): left out for datasets without them.
NEEDS_BOXES = {"eval_loc"}
WITHOUT_BOXES = ("coco14", "folder")


def plan_steps(selected: list[str], dataset: str | None = None, pretrain: bool = False) -> list[tuple[str, dict]]:
    """PLAN, or the steps of it named in `selected` (stage.steps), in plan order; without the box
    steps for a dataset that has no boxes, and without `pretrain` unless `pretrain` is true (some
    `*.pretrained` is synthetic)."""
    plan = [
        entry
        for entry in PLAN
        if not (dataset in WITHOUT_BOXES and entry[0] in NEEDS_BOXES) and (pretrain or entry[0] != "pretrain")
    ]
    if not selected:
        return plan
    labels = [step_label(step, overrides) for step, overrides in PLAN]
    unknown = [s for s in selected if s not in labels]
    if unknown:
        raise RecamInputError(
            f"recam: stage.steps={unknown} are not steps of the plan - choose from {', '.join(labels)}"
        )
    return [entry for entry, label in zip(PLAN, labels) if label in selected and entry in plan]
