"""Entry point: `python -m recam.train stage=<name> dataset=<voc12|synthetic> key=value ...`."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from recam.config import Config, register_configs
from recam.errors import RecamInputError

log = logging.getLogger("recam")


def to_config(cfg: DictConfig) -> Config:
    """Validate and convert the composed Hydra config to the typed `Config` (once, at the entry)."""
    return OmegaConf.to_object(cfg)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    # Imported here, not at the top: the CRF stages' spawned workers re-import this module as
    # __mp_main__, and the pipeline's imports (torch, torchvision) cost each worker seconds.
    from recam.pipeline import run_stage

    try:
        run_stage(to_config(cfg))
    except RecamInputError as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    register_configs()
    main()
