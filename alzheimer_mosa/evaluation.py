"""After training: the best weights on val and test through :func:`shared.evaluate_best`, then, from the
same numbers, the source document's files, ``Test/*`` in TensorBoard, and the export.

* ``<run>/results/`` (every project's files): ``{val,test}_metrics.json``, ``_per_class.csv``,
  ``_predictions.csv`` (one row per volume path), ``_roc.png``, ``_pr.png``, ``_confusion.png`` and
  ``training_curves.png``;
* ``<run>/`` (the document's): ``best_val_per_class_metrics.json``, ``test_per_class_metrics.json`` and
  ``summary_all.json``;
* ``<run>/export/``: ``model.safetensors`` + ``model.json``, loadable with :func:`shared.load_export`.
"""

from __future__ import annotations

from typing import Any, Mapping

from shared import CheckpointError, Engine, config_to_dict, evaluate_best, export_model, write_json
from alzheimer_mosa.augment import export_preprocessing
from alzheimer_mosa.callbacks import VolumeClassificationTask
from alzheimer_mosa.config import Config
from alzheimer_mosa.data_loader import VolumeDataset
from alzheimer_mosa.metrics_utils import add_figures_to_tensorboard, per_class_payload, scalar_metrics
from alzheimer_mosa.model_builder import PROJECT, architecture

DOCUMENT_SPLIT_NAMES = {"val": "best_val", "test": "test"}  # results/ name -> the document's name
TENSORBOARD_FIGURES = {"confusion_matrix": "confusion", "roc": "roc", "pr": "pr"}  # tag -> results/ PNG


def evaluate_run(engine: Engine, task: VolumeClassificationTask, datasets: Mapping[str, VolumeDataset],
                 cfg: Config, run_name: str, kind: str) -> dict[str, Any]:
    """Evaluate the best (EMA when on; the final ones with ``train.save_best: false``) weights, write every
    file, export; returns the ``summary_all.json`` payload."""
    use_ema = engine.ema is not None
    monitor = cfg.train.early_stopping.monitor
    monitor = monitor.replace("val/", "val_ema/", 1) if use_ema else monitor
    best_metric = engine.best_ema_metric if use_ema else engine.best_metric
    best_epoch = next((h["epoch"] for h in engine.history if h.get(monitor) == best_metric), None)
    if not engine.cfg.save_best and engine.history:  # no best checkpoint: the final weights are the ones used
        best_epoch, best_metric = engine.history[-1]["epoch"], engine.history[-1].get(monitor)
    best_path = engine.checkpoint_path("best_ema" if use_ema else "best")
    if engine.cfg.save_best and not best_path.is_file():  # the best weights are evaluated and exported
        raise CheckpointError(f"{best_path} was never written: {monitor} was never finite (a validation split "
                              f"with one class has no AUC); choose another train.early_stopping.monitor")
    splits = {split: datasets[split] for split in DOCUMENT_SPLIT_NAMES if split in datasets}
    metrics = evaluate_best(engine, splits, use_ema=use_ema, positive_class=task.positive_class)["splits"]
    out, step, is_main = engine.output_dir, engine.global_step, engine.accelerator.is_main_process
    if is_main and cfg.logging.export_per_class:
        for split, values in metrics.items():
            write_json(out / f"{DOCUMENT_SPLIT_NAMES[split]}_per_class_metrics.json",
                       per_class_payload(values, task.class_names, cfg.data.positive_class))
    writer = engine.tensorboard
    if writer is not None and "test" in metrics:
        for name, value in scalar_metrics(metrics["test"]).items():
            writer.add_scalar(f"Test/{name}", value, step)
        add_figures_to_tensorboard(writer, "Test", {tag: out / "results" / f"test_{png}.png"
                                                    for tag, png in TENSORBOARD_FIGURES.items()}, step)
        writer.flush()
    summary = {
        "run_name": run_name, "log_dir": str(out), "checkpoint_dir": str(engine.checkpoint_dir), "monitor": monitor,
        "best_epoch": best_epoch, "best_metric": best_metric, "epochs_run": len(engine.history), "global_step": step,
        "class_names": list(cfg.data.class_names), "positive_class": cfg.data.positive_class,
        "best_val": scalar_metrics(metrics["val"]), "test": scalar_metrics(metrics["test"]) if "test" in metrics else None,
        "results_dir": str(out / "results"), "export_dir": str(out / "export"), "config": config_to_dict(cfg),
    }
    if is_main:
        model = engine.ema.module if use_ema else engine.accelerator.unwrap_model(engine.model)
        export_model(model, out / "export", project=PROJECT, architecture=architecture(cfg, kind),
                     class_names=cfg.data.class_names, task="multi-class",
                     preprocessing=export_preprocessing(cfg.data, cfg.backbone.in_channels))
        write_json(out / "summary_all.json", summary)
    return summary
