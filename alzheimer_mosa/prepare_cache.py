"""Preprocess every volume once (canonical orientation, foreground crop, resize or crop/pad) into a
memory-mapped cache, so training epochs only run the augmentations and the normalisation.

    python alzheimer_mosa/prepare_cache.py --data.data_root DATA --data.cache_dir CACHE [--data.target_size ...]

Same config and overrides as train_mosa.py (``--help`` lists them); train with the same
``data.cache_dir``. Interrupt it at any time: running it again continues where it stopped. Other
preprocessing settings build another cache.
"""
from __future__ import annotations

from typing import Sequence

from alzheimer_mosa.config import Config, config_from_cli
from alzheimer_mosa.data_loader import load_split_records, volume_caches
from shared import ConfigError, run_cli


def prepare(cfg: Config) -> dict:
    if not cfg.data.cache_dir:
        raise ConfigError("set --data.cache_dir DIR (and use the same value for training)")
    caches = volume_caches(cfg, load_split_records(cfg.data, cfg.train.seed))
    for split, cache in caches.items():
        cache.build()
        print(f"{split}: {cache.dir} ({len(cache)} volumes)")
    return caches


def main(argv: Sequence[str] | None = None) -> dict:
    return prepare(config_from_cli(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
