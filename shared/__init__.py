"""Shared building blocks of the five training projects.

Small single-purpose modules, re-exported here: ``config`` (typed dataclasses + YAML), ``cli`` (the one
command line), ``io`` (atomic JSON/CSV), ``export`` (the one exported model format), ``evaluation``,
``engine`` (the Accelerate training loop) with ``train_config``, ``interfaces``, ``early_stopping``,
``accelerator`` (device and the one mixed-precision rule), ``optim``, ``loaders`` and ``resume``;
``checkpoint``, ``losses``, ``metrics``, ``plots``, ``data`` (image helpers, splits, transforms),
``tasks`` (multi-label / multi-class tasks) and ``cxr14`` (ChestX-ray14 data).
"""
from timm.utils import ModelEmaV3

from .checkpoint import CheckpointError, load_checkpoint, load_model_weights, save_checkpoint, \
    strip_module_prefix
from .cli import parse_cli, run_cli
from .config import ConfigError, config_from_dict, config_to_dict, load_config, parse_overrides, save_config
from .data import DataError, IMAGENET_MEAN, IMAGENET_STD, ImageNormalize, SplitConfig, build_image_transform, \
    check_image_size, group_ids, group_split, load_image, pre_crop_size, scan_class_folders, \
    stratified_folds, stratified_group_split, stratified_split, total_stride
from .engine import Callback, EarlyStopping, EarlyStoppingConfig, Engine, NonFiniteLossError, Task, TrainConfig, \
    fused_optimizer_kwargs, process_state, resolve_mixed_precision
from .evaluation import class_probabilities, evaluate_best, write_split_results
from .export import Preprocessing, export_model, load_export, read_export_info, register_model
from .io import atomic_write, read_json, write_csv, write_json
from .losses import AsymmetricLoss, BinaryFocalLoss, FocalLoss, SoftTargetCrossEntropy, build_loss, \
    pos_weight_from_labels
from .metrics import multiclass_metrics, multilabel_metrics, tune_thresholds
from .tasks import MultiClassTask, MultiLabelTask
from .plots import plot_confusion_matrix, plot_pr_curves, plot_roc_curves, plot_training_curves

__all__ = [
    "ModelEmaV3", "parse_cli", "run_cli", "class_probabilities", "evaluate_best", "write_split_results", "Preprocessing",
    "load_export", "read_export_info", "register_model", "atomic_write", "read_json", "write_csv", "write_json",
    "CheckpointError", "export_model", "load_checkpoint", "load_model_weights", "save_checkpoint",
    "strip_module_prefix", "ConfigError", "config_from_dict", "config_to_dict", "load_config", "parse_overrides", "save_config",
    "DataError", "IMAGENET_MEAN", "IMAGENET_STD", "ImageNormalize", "build_image_transform", "group_split",
    "load_image", "pre_crop_size", "scan_class_folders", "stratified_split", "SplitConfig", "check_image_size",
    "group_ids", "stratified_folds", "stratified_group_split", "total_stride", "Callback", "EarlyStopping", "EarlyStoppingConfig",
    "Engine", "NonFiniteLossError", "fused_optimizer_kwargs", "process_state", "resolve_mixed_precision", "Task", "TrainConfig", "AsymmetricLoss", "BinaryFocalLoss", "FocalLoss",
    "SoftTargetCrossEntropy", "build_loss", "pos_weight_from_labels", "multiclass_metrics", "multilabel_metrics",
    "tune_thresholds", "MultiClassTask", "MultiLabelTask", "plot_confusion_matrix", "plot_pr_curves", "plot_roc_curves", "plot_training_curves",
]
