"""Entry point: `python -m recam.train stage=<name> dataset=<voc12|synthetic> key=value ...`.

Exit codes: 0 done; 2 bad input (one `recam:` line: a value out of range, a missing file, a stage
run before its inputs, or a command line Hydra could not compose - Hydra's own message first);
anything else is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recam.config import Config, register_configs
from recam.engine.progress import close_all
from recam.errors import RecamInputError

log = logging.getLogger("recam")

COMPOSE_HINT = (
    "recam: Hydra stopped before the run started (its message is above: an unknown key, a wrong type, "
    "an unknown option of a config group, or a log folder it cannot write) - fix that override or "
    "folder; `python -m recam.train --help` lists the groups and `--cfg job` prints the config"
)
_task_started = False


def to_config(cfg: DictConfig) -> Config:
    """Validate the types and convert the composed Hydra config to the typed `Config` (once, here)."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        message = str(err).splitlines()[0]
        raise RecamInputError(
            f"recam: config key {key} is not valid ({message}) - set it on the command line, e.g. {key}=<value>"
        ) from err


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    # Imported here, not at the top: the CRF stages' spawned workers re-import this module as
    # __mp_main__, and the pipeline's imports (torch, torchvision) cost each worker seconds.
    from recam.pipeline import run_stage

    try:
        run_stage(to_config(cfg))
    except RecamInputError as err:
        close_all()  # every progress bar's line ends before the error line
        log.error("%s", err)
        sys.exit(2)


def entry() -> None:
    """Run `main`; a failure of Hydra's own composition (before our task starts) ends with our line, code 2."""
    register_configs()
    try:
        main()
    except SystemExit as exit_:
        if exit_.code not in (0, None, 2) and not _task_started:
            print(COMPOSE_HINT, file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    entry()
