"""Build the preprocessed image cache once (decode, grayscale, resize to image_size + margin).

    python convnext_cxr/prepare_cache.py --data.cache_dir /fast/disk/cxr_cache [--data.image_size 512 ...]

Takes the same config and overrides as train.py; afterwards train.py with the same data.cache_dir
and image_size reads the cache. Interrupt it at any time: running it again continues where it stopped.
"""
from __future__ import annotations

from typing import Sequence

from convnext_cxr.config import parse_config
from convnext_cxr.dataset import split_caches, split_cxr_records
from shared import run_cli


def main(argv: Sequence[str] | None = None) -> list:
    cfg = parse_config(argv, description="Build convnext_cxr's preprocessed image cache (same keys as train.py; "
                                         "set data.cache_dir).")
    if not cfg.data.cache_dir:
        raise SystemExit("set --data.cache_dir DIR (and use the same value for training)")
    caches = split_caches(cfg.data, split_cxr_records(cfg.data, cfg.train.output_dir, cfg.train.seed))
    for cache in caches:
        cache.build()
        print(f"{cache.dir}: {len(cache)} images at {cache.size}px")
    return caches


if __name__ == "__main__":
    run_cli(main)
