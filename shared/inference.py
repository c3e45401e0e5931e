"""Any project's export applied to one file at a time: the probabilities and heatmap :mod:`shared.serve` shows.

The input is made exactly as the project's evaluation makes it (so a served probability equals the project's
``predict``): 2D images by :func:`image_reader`'s rule, 3D volumes by the reader the project registered. A
zero-shot (CLIP) export can be asked with other class texts; its model provides ``embed_class_texts`` and
takes ``class_embeddings`` in ``forward``. One lock serialises the model: Grad-CAM hooks into its layers.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn

from .case_heatmaps import case_figure
from .data import DataError, build_image_transform, load_image
from .evaluation import class_probabilities
from .export import export_thresholds, load_export, project_input_reader
from .heatmaps import logits_of
from .plots import plt
from .uploads import UploadError, dicom_image


def _image_transform(preprocessing: Mapping[str, Any]) -> tuple[str, Callable]:
    """(PIL mode, transform) of a 2D export: grayscale-trained models (chest X-rays) read the image as
    grayscale and replicate it; the transform is the projects' evaluation one."""
    size = preprocessing["size"]
    if size[0] != size[1]:
        raise DataError(f"exported input size {size} is not square; the 2D reader resizes to squares")
    transform = build_image_transform(size[0], train=False, mean=preprocessing["mean"], std=preprocessing["std"])
    return ("L" if "grayscale" in preprocessing.get("extra", {}) else "RGB"), transform


def image_reader(preprocessing: Mapping[str, Any]) -> Callable[[Path], torch.Tensor]:
    """path -> the 2D input tensor the export's ``preprocessing`` describes."""
    mode, transform = _image_transform(preprocessing)
    return lambda path: transform(load_image(path, mode=mode))


def _reason(err: BaseException, path: Path) -> str:
    """One line on why a saved upload could not be read, without the server's temporary path."""
    cause = err.__cause__ if isinstance(err, DataError) and err.__cause__ is not None else err
    return f"{type(cause).__name__}: " + " ".join(str(cause).replace(str(path), "the file").split())


@dataclass
class Classes:
    """What a request is answered with: the model to apply and its class names."""
    model: nn.Module
    names: list[str]


class _WithClassEmbeddings(nn.Module):
    """A zero-shot model bound to other class embeddings, so Grad-CAM sees a plain images -> logits model."""

    def __init__(self, model: nn.Module, class_embeddings: torch.Tensor):
        super().__init__()
        self.model, self.class_embeddings = model, class_embeddings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, class_embeddings=self.class_embeddings)


class Predictor:
    """An export loaded once; :meth:`input_of` turns a saved upload into the model input and :meth:`predict`
    gives the class probabilities, which classes are positive, and a heatmap figure as PNG bytes."""

    def __init__(self, export_dir: str | Path, device: str = "cpu"):
        self.export_dir = Path(export_dir)
        self.model, self.info = load_export(self.export_dir, device=device)
        self.device = torch.device(device)
        self.task, self.class_names = self.info["task"], list(self.info["class_names"])
        self.preprocessing = self.info["preprocessing"]
        self.spatial_dims = self.preprocessing["spatial_dims"]
        self.thresholds = None
        if self.task == "multi-label":  # 0.5 where the export carries no tuned thresholds
            self.thresholds = export_thresholds(self.info)
        self.class_texts = dict(self.info.get("extra", {}).get("class_texts") or {})
        if self.spatial_dims == 3:
            self._read_volume = project_input_reader(self.info)
        else:
            self._mode, self._transform = _image_transform(self.preprocessing)
        self._tokenizer = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What the page and scripts need to know about the model."""
        return {"project": self.info["project"], "task": self.task, "class_names": self.class_names,
                "thresholds": self.thresholds, "thresholds_exported": bool(self.info.get("thresholds")),
                "class_texts": self.class_texts or None, "spatial_dims": self.spatial_dims,
                "input_size": list(self.preprocessing["size"])}

    def input_of(self, path: Path, kind: str, name: str) -> torch.Tensor:
        """The model input of an upload saved at ``path`` of ``kind`` (:func:`shared.uploads.sniff`)."""
        project = self.info["project"]
        if self.spatial_dims == 3:
            if not kind.startswith("nifti"):
                raise UploadError(f"{name}: a 2D image; this {project} model takes 3D NIfTI volumes (.nii, .nii.gz)")
            try:
                return self._read_volume(path)
            except Exception as err:  # nibabel and torchio raise many types for damaged volumes
                raise UploadError(f"{name}: cannot read this NIfTI volume ({_reason(err, path)})") from None
        if kind.startswith("nifti"):
            raise UploadError(f"{name}: a NIfTI volume (3D); this {project} model takes 2D images (PNG, JPEG, DICOM)")
        if kind == "dicom":
            image = dicom_image(path, name)
        else:
            try:
                image = load_image(path, mode=self._mode)
            except DataError as err:
                raise UploadError(f"{name}: cannot read this image ({_reason(err, path)})") from None
        return self._transform(image.convert(self._mode))

    def classes(self, class_texts: Mapping[str, str] | None = None, heatmap_class: str | None = None) -> Classes:
        """The model and class names a request asks for: the export's, or a zero-shot model bound to other
        texts (encoded once per request); a request that cannot be served raises :class:`DataError`."""
        found = Classes(self.model, self.class_names)
        if class_texts and dict(class_texts) != self.class_texts:
            if self.task != "zero-shot":
                raise DataError(f"class texts apply to zero-shot (CLIP) models; this one is {self.task}")
            names, texts = [str(n).strip() for n in class_texts], [str(t).strip() for t in class_texts.values()]
            if len(names) < 2 or not all(names) or not all(texts) or len(set(names)) != len(names):
                raise DataError("zero-shot classification needs at least two classes, each with a name and a text")
            with self._lock:
                if self._tokenizer is None:
                    from transformers import AutoTokenizer
                    self._tokenizer = AutoTokenizer.from_pretrained(self.export_dir / self.info["extra"]["tokenizer_dir"])
                embeddings = self.model.embed_class_texts(self._tokenizer, texts)
            found = Classes(_WithClassEmbeddings(self.model, embeddings).eval(), names)  # Grad-CAM restores this mode
        if heatmap_class is not None and heatmap_class not in found.names:
            raise DataError(f"heatmap_class {heatmap_class!r} is not one of the classes {found.names}")
        return found

    def predict(self, inputs: torch.Tensor, classes: Classes | None = None, heatmap: bool = True,
                heatmap_class: str | None = None) -> dict[str, Any]:
        """Probabilities of one input (C, ...) against ``classes`` (default: the export's) and, with ``heatmap``,
        the Grad-CAM figure of ``heatmap_class`` (default: the most probable class) as PNG bytes."""
        classes = classes or self.classes(heatmap_class=heatmap_class)
        model, names = classes.model, classes.names
        with self._lock:
            with torch.no_grad():
                logits = logits_of(model(inputs[None].to(self.device)), len(names)).float().cpu().numpy()
            probs = class_probabilities(self.task, logits)[0].astype(np.float64)
            if self.thresholds is not None:
                positive = [bool(p >= t) for p, t in zip(probs, self.thresholds)]
            else:
                positive = [i == int(probs.argmax()) for i in range(len(names))]
            result = {"class_names": names, "probabilities": probs.tolist(), "positive": positive}
            if heatmap:
                cls = names.index(heatmap_class) if heatmap_class is not None else int(probs.argmax())
                # no title: class names may need glyphs matplotlib's font lacks (Chinese); the page captions it
                fig = case_figure(model, inputs[None].to(self.device), cls, self.preprocessing,
                                  lambda output: logits_of(output, len(names)))
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
                plt.close(fig)
                result.update(heatmap_class=names[cls], heatmap_png=buffer.getvalue())
        return result
