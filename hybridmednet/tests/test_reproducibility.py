"""The same seed twice gives the same epoch-1 training loss (model init, split, augmentations in 2 loader
workers all follow train.seed)."""
from __future__ import annotations

import json
import random

import numpy as np
import torch

from hybridmednet.train import main


def epoch_one_loss(out, seed):
    torch.manual_seed(random.randrange(1000))  # whatever the global state before main, the seed decides
    overrides = {
        "MODEL.backbone": "test_convnext", "MODEL.pretrained": "false", "MODEL.fpn_channels": 32,
        "MODEL.fusion_channels": 64, "MODEL.num_heads": 4, "train.epochs": 1, "train.batch_size": 8,
        "train.limit_train_batches": 3, "train.mixed_precision": "no", "train.warmup_epochs": 0,
        "DATA.demo": "true", "DATA.demo_num_images": 40, "DATA.image_size": 32, "train.num_workers": 2,
        "train.seed": seed, "train.output_dir": str(out), "train.tracker": "none", "train.save_best": "false",
    }
    main([arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")])
    return json.loads((out / "history.json").read_text())[0]["train/loss"]


def test_the_same_seed_twice_gives_the_same_epoch_one_loss(tmp_path):
    np.random.seed(None)
    assert epoch_one_loss(tmp_path / "a", seed=5) == epoch_one_loss(tmp_path / "b", seed=5)
