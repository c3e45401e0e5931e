"""The source document's ``ConvNeXtTrainer``: a thin wrapper over the command line's training path.

    from convnext_v2.ConvNeXtModelV2 import convnext_tiny
    from convnext_v2.trainer import ConvNeXtTrainer      # or convnext_v2.train, as in the document

    trainer = ConvNeXtTrainer(model, device="cuda", use_amp=True, use_mixup=True, use_cutmix=True,
                              label_smoothing=0.1)
    trainer.setup_optimizer(learning_rate=1e-4, weight_decay=0.05)
    trainer.setup_scheduler(scheduler_type="cosine", epochs=100)
    history = trainer.train(train_loader, val_loader, epochs=100)

Every keyword becomes a key of the project's one config (:class:`convnext_v2.train.RunConfig`) through
the same alias table as the command line (``learning_rate`` -> ``train.lr``, ``use_mixup`` ->
``mix.mixup``, ...); ``train()`` then runs :func:`convnext_v2.train.build_engine`, the engine ``train.py``
uses. Settings the document's signatures do not name come from ``config=TrainConfig(...)``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from convnext_v2.model import ConvNeXt, architecture
from convnext_v2.task import best_is_ema, plot_curves
from convnext_v2.train import SOURCE_ALIASES, RunConfig, build_engine, default_train_config
from shared import Engine, TrainConfig, config_from_dict, config_to_dict

#: The aliases that rename a key (the command line's fixed-value flags, --use-amp/--no-amp, are below).
RENAMES = {alias: key for alias, key in SOURCE_ALIASES.items() if "=" not in key}

#: ``use_amp``: True = "auto" (as --use-amp: the engine picks the precision once), False = "no" (--no-amp);
#: a precision name ("bf16", "fp16", "no", "auto") is passed through.
USE_AMP = {True: "auto", False: "no"}


def with_values(cfg: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """``cfg`` with ``values`` set and type-checked; keys are dotted config keys or the source document's names."""
    nested = config_to_dict(cfg)
    for key, value in values.items():
        *parents, leaf = RENAMES.get(key, key).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config_from_dict(type(cfg), nested)


def _unpack(data: Dataset | DataLoader) -> tuple[Dataset, dict[str, Any], Callable | None]:
    """(dataset, the loader's batch size and workers as source-document keys, collate function)."""
    if isinstance(data, DataLoader):
        if data.batch_size is None:
            raise ValueError("train() needs DataLoaders with a batch_size (no custom batch_sampler)")
        return data.dataset, {"batch_size": data.batch_size, "num_workers": data.num_workers}, data.collate_fn
    return data, {}, None


class ConvNeXtTrainer:
    """The source document's trainer, running on the shared Accelerate ``Engine``.

    * ``device``: "cuda" uses the GPU Accelerate gives each process (the CPU, with a warning, when there is
      none); "cpu" forces the CPU (``train.cpu``).
    * ``use_amp``: see :data:`USE_AMP` (``train.mixed_precision``).
    * ``use_mixup`` / ``use_cutmix`` / ``label_smoothing`` / ``mixup_alpha`` / ``cutmix_alpha``: ``mix.*``.
    * A DataLoader given to :meth:`train` lends its dataset, collate function, workers and batch size, which
      is ``train.batch_size``: the global batch, split over processes like every batch size here.
    * Weight decay never touches norms, biases, LayerScale or GRN (``ConvNeXt.no_weight_decay``).
    """

    def __init__(self, model: nn.Module, device: str = "cuda", use_amp: bool | str = True, use_mixup: bool = True,
                 use_cutmix: bool = True, label_smoothing: float = 0.1, *, mixup_alpha: float = 0.8,
                 cutmix_alpha: float = 1.0, class_names: Sequence[str] | None = None,
                 config: TrainConfig | None = None):
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            warnings.warn("device='cuda' but no GPU is available: training on the CPU", RuntimeWarning, stacklevel=2)
        self.model = model
        self.class_names = list(class_names) if class_names is not None else None
        name = architecture(model)["model_name"] if isinstance(model, ConvNeXt) else None
        self.config = with_values(RunConfig(model=name or "", train=config or default_train_config()), {
            "use_mixup": use_mixup, "use_cutmix": use_cutmix, "label_smoothing": label_smoothing,
            "mixup_alpha": mixup_alpha, "cutmix_alpha": cutmix_alpha, "train.cpu": device == "cpu",
            "train.mixed_precision": USE_AMP.get(use_amp, use_amp)})
        self.engine: Engine | None = None
        self.history: list[dict] = []

    def setup_optimizer(self, learning_rate: float = 1e-4, weight_decay: float = 0.05,
                        optimizer: str = "adamw") -> None:
        """AdamW (or any timm optimizer name); decay is skipped for the parameters listed above."""
        self.config = with_values(self.config, {"learning_rate": learning_rate, "weight_decay": weight_decay,
                                                "optimizer": optimizer})

    def setup_scheduler(self, scheduler_type: str = "cosine", epochs: int = 100, warmup_epochs: float = 5,
                        min_lr: float = 1e-6, step_size: float = 30, gamma: float = 0.1) -> None:
        """Linear warmup, then cosine decay to ``min_lr`` or a step decay by ``gamma`` every ``step_size``
        epochs; updated every optimizer step."""
        if scheduler_type not in ("cosine", "step"):
            raise ValueError(f"scheduler_type must be 'cosine' or 'step', got {scheduler_type!r}")
        self.config = with_values(self.config, {
            "scheduler_type": scheduler_type, "epochs": epochs, "warmup_epochs": warmup_epochs, "min_lr": min_lr,
            "step_size": step_size, "gamma": gamma})

    def train(self, train_data: Dataset | DataLoader, val_data: Dataset | DataLoader | None = None,
              epochs: int | None = None) -> list[dict]:
        """Train and return the per-epoch history (DataLoaders or Datasets)."""
        train_set, loader_values, collate_fn = _unpack(train_data)
        val_set = _unpack(val_data)[0] if val_data is not None else None
        self.config = with_values(self.config, {**loader_values, **({"epochs": epochs} if epochs is not None else {})})
        class_names = self.class_names or getattr(train_set, "class_names", None)
        num_classes = getattr(self.model, "num_classes", None) or (len(class_names) if class_names else None)
        if num_classes is None:
            raise ValueError("pass class_names: the model does not say how many classes it has")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"the model has {num_classes} outputs but there are {len(class_names)} classes")
        class_names = class_names or [str(i) for i in range(num_classes)]
        self.engine = build_engine(self.config, self.model, train_set, val_set, class_names=class_names,
                                   collate_fn=collate_fn)
        self.history = self.engine.fit()
        plot_curves(self.engine)
        return self.history

    def load_best(self) -> str:
        """Load the best weights by the monitored validation metric, raw or EMA, whichever scored better;
        returns "ema" or "raw"."""
        engine = self._require_engine()
        use_ema = best_is_ema(engine)
        engine.load_best(use_ema=use_ema)
        return "ema" if use_ema else "raw"

    def evaluate(self, data: Dataset | DataLoader, use_ema: bool = False) -> dict[str, Any]:
        """Metrics (accuracy, F1, AUC, confusion matrix, ...) of the current raw or EMA weights."""
        metrics, _ = self._require_engine().evaluate(_unpack(data)[0], use_ema=use_ema)
        return metrics

    def close(self) -> None:
        """Flush the TensorBoard logs."""
        self._require_engine().close()

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("call train() first")
        return self.engine
