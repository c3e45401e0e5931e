"""A local web page and JSON endpoint to try any project's export: drop in images, read the probabilities.

    python -m shared.serve --model runs/convnext_cxr_demo/export [--host 127.0.0.1] [--port 7860]

The page (``shared/serve_page/``) lists every class's probability with the exported thresholds marked and
the positive findings highlighted, and shows the Grad-CAM heatmap over the image (three slices through
its peak for a 3D volume). For a zero-shot (CLIP) export the class texts are editable on the page.
Scripts post the same files to ``POST /api/predict`` (multipart ``files``; optional ``class_texts`` as a
JSON object ``{"class": "text"}``, ``heatmap`` true/false, ``heatmap_class``) and get JSON back;
``GET /api/model`` describes the model.

Private by default: it binds 127.0.0.1, the page loads nothing from anywhere else (a Content-Security-Policy
of ``'self'`` makes the browser refuse anything that would), there are no analytics and no API docs page
(FastAPI's loads its scripts from a CDN). A request larger than ``--max_upload_mb`` is refused before it is
read. Uploads are written only into one temporary folder per request, which is removed when the request
ends; the server's temporary root is removed at shutdown.
"""
from __future__ import annotations

import base64
import json
import logging
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from .cli import parse_cli, run_cli
from .config import ConfigError
from .data import DataError
from .inference import Predictor
from .uploads import READABLE, save_upload

LOG = logging.getLogger("shared.serve")
PAGE_DIR = Path(__file__).with_name("serve_page")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass
class ServeConfig:
    model: str = ""  # an export folder (model.safetensors + model.json) that a project's train.py wrote
    host: str = "127.0.0.1"  # 0.0.0.0 lets other computers upload (there is no login): only on a trusted network
    port: int = 7860  # the page is http://HOST:PORT/
    max_upload_mb: float = 64.0  # a larger request is refused (HTTP 413) before it is read
    max_files: int = 16  # files per request
    heatmaps: bool = True  # Grad-CAM per file (slower on the CPU for large 3D models)
    device: str = "auto"  # cuda when available, else cpu; or any torch device name


class UploadTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware around the app: every response gets :data:`SECURITY_HEADERS`, and a request body over
    ``max_bytes`` is refused with 413, by its Content-Length before anything is read, or by counting when the
    client streams without one (the endpoint turns :class:`UploadTooLarge` into the same 413)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"error": too_large_message(self.max_bytes)}, status_code=413)
            return await response(scope, receive, send_with_headers)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise UploadTooLarge()
            return message

        return await self.app(scope, counting_receive, send_with_headers)


def too_large_message(max_bytes: int) -> str:
    return (f"the upload is larger than this server's limit of {max_bytes / 2 ** 20:g} MB; "
            "send fewer or smaller files, or restart the server with a larger --max_upload_mb")


def create_app(predictor: Predictor, cfg: ServeConfig):
    """The FastAPI application serving ``predictor`` (see the module docstring for its routes)."""
    upload_root = Path(tempfile.mkdtemp(prefix="medcls-serve-"))

    @asynccontextmanager
    async def lifespan(app):
        yield
        shutil.rmtree(upload_root, ignore_errors=True)

    app = FastAPI(title="medcls serve", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.upload_root = upload_root
    max_bytes = int(cfg.max_upload_mb * 2 ** 20)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in ("page.js", "page.css"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(PAGE_DIR / name)

    @app.get("/api/model")
    def model_info() -> dict[str, Any]:
        return {**predictor.describe(), "max_upload_mb": cfg.max_upload_mb, "max_files": cfg.max_files,
                "heatmaps": cfg.heatmaps, "readable": READABLE}

    @app.post("/api/predict")
    async def predict(request: Request):
        try:
            async with request.form() as form:  # the file count is checked below, with our own message
                uploads = [(f.filename or f"file {i + 1}", await f.read())
                           for i, f in enumerate(form.getlist("files")) if not isinstance(f, str)]
                options = request_options(form, cfg, len(uploads))
        except UploadTooLarge:
            return JSONResponse({"error": too_large_message(max_bytes)}, status_code=413)
        except DataError as err:
            return JSONResponse({"error": str(err)}, status_code=422)
        except Exception as err:  # a malformed multipart body
            return JSONResponse({"error": f"cannot read the request: {err}; post multipart/form-data "
                                          "with one or more 'files'"}, status_code=400)
        try:
            results = await run_in_threadpool(predict_uploads, predictor, uploads, upload_root, options)
        except DataError as err:  # options that no file can be answered with (class texts, heatmap class)
            return JSONResponse({"error": str(err)}, status_code=422)
        failed = [r for r in results if "error" in r]
        body = {"task": predictor.task, "thresholds": predictor.thresholds, "results": results}
        if len(failed) == len(results):
            body["error"] = failed[0]["error"] if len(failed) == 1 else f"none of the {len(failed)} files could be read"
            return JSONResponse(body, status_code=422)
        return JSONResponse(body)

    return Guard(app, max_bytes)


def request_options(form, cfg: ServeConfig, n_files: int) -> dict[str, Any]:
    """The predict options of a request's form fields; a bad one raises :class:`DataError`."""
    if n_files == 0:
        raise DataError("no files in the request: post one or more files as multipart form field 'files'")
    if n_files > cfg.max_files:
        raise DataError(f"{n_files} files in one request; this server takes at most {cfg.max_files}")
    class_texts = None
    if form.get("class_texts"):
        try:
            class_texts = json.loads(form["class_texts"])
        except json.JSONDecodeError as err:
            raise DataError(f"class_texts is not JSON ({err}); send an object {{\"class\": \"text\"}}") from None
        if not isinstance(class_texts, dict):
            raise DataError("class_texts must be a JSON object {\"class\": \"text\"}")
    heatmap = str(form.get("heatmap", "true")).lower() not in ("false", "0", "no") and cfg.heatmaps
    return {"class_texts": class_texts, "heatmap": heatmap, "heatmap_class": form.get("heatmap_class") or None}


def predict_uploads(predictor: Predictor, uploads: Sequence[tuple[str, bytes]], upload_root: Path,
                    options: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per upload: probabilities (and heatmap) or the reason it could not be used. The files live
    only in a temporary folder that is removed before this returns. Options no file can be answered with
    raise :class:`DataError`."""
    classes = predictor.classes(options["class_texts"], options["heatmap_class"])
    results = []
    with tempfile.TemporaryDirectory(dir=upload_root) as folder:
        for index, (name, data) in enumerate(uploads):
            try:
                path, kind = save_upload(data, name, Path(folder), index)
                result = predictor.predict(predictor.input_of(path, kind, name), classes, options["heatmap"],
                                           options["heatmap_class"])
            except DataError as err:
                results.append({"file": name, "error": str(err)})
                continue
            except Exception as err:  # a bug, not a bad file: the traceback goes to the console, one line to the page
                LOG.exception("predicting %s failed", name)
                results.append({"file": name, "error": f"{name}: the model failed on this file ({type(err).__name__}: "
                                                       f"{err}); the server's console has the details"})
                continue
            entry = {"file": name, "probabilities": dict(zip(result["class_names"], result["probabilities"])),
                     "positive": [c for c, p in zip(result["class_names"], result["positive"]) if p]}
            if "heatmap_png" in result:
                entry["heatmap_class"] = result["heatmap_class"]
                entry["heatmap_png"] = base64.b64encode(result["heatmap_png"]).decode("ascii")
            results.append(entry)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    cfg = parse_cli(ServeConfig, argv, description="A local web page (and JSON endpoint) to try an exported model.")
    if not cfg.model:
        raise ConfigError("give the export folder to serve: --model EXPORT_DIR (make demo leaves "
                          "runs/convnext_cxr_demo/export)")
    if cfg.max_upload_mb <= 0 or cfg.max_files < 1:
        raise ConfigError("--max_upload_mb must be > 0 and --max_files >= 1")
    import uvicorn

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    predictor = Predictor(cfg.model, device=device)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {cfg.host}: anyone who can reach this computer can upload images "
              "(there is no login); use it only on a trusted network")
    print(f"serving {predictor.info['project']} ({predictor.task}, {len(predictor.class_names)} classes) "
          f"from {cfg.model} at http://{cfg.host}:{cfg.port}/", flush=True)
    uvicorn.run(create_app(predictor, cfg), host=cfg.host, port=cfg.port, log_level="warning")


if __name__ == "__main__":
    run_cli(main)
