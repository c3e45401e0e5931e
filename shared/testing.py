"""Helpers for the projects' tests: a free local port, TensorBoard logs read back independent of file names, a
web app served in a thread, headless Chromium, and DICOM files written from pixel arrays.

TensorBoard orders a folder's event files by name, and a writer's name holds the second it opened and a
per-process counter: two writers opened in the same second by one process (a run and its resume inside
one test) can sort in either order ("...5.10" before "...5.9"). :func:`read_scalars` orders the files by
the wall time of their first event instead, then applies each writer's purge step as TensorBoard does.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog
from tensorboard.util.tensor_util import make_ndarray


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test's torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events(path: Path) -> list:
    return list(EventFileLoader(str(path)).Load())


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every event file under ``log_dir``, in the order written.

    A writer opened with ``purge_step`` (a resumed run) records a session start at that step; like
    TensorBoard, everything logged earlier at that step or later is dropped.
    """
    files = [_events(path) for path in Path(log_dir).rglob("events.out.tfevents*")]
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((e for e in files if e), key=lambda e: e[0].wall_time):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and make_ndarray(value.tensor).size == 1:
                    number = float(make_ndarray(value.tensor).item())
                else:
                    continue  # an image, histogram or text, not a scalar
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def scalar_steps(log_dir: str | Path, tag: str) -> list[int]:
    """The steps at which ``tag`` was logged (see :func:`read_scalars`)."""
    return [step for step, _ in read_scalars(log_dir).get(tag, [])]


@contextlib.contextmanager
def serving(app):
    """Serve an ASGI ``app`` on 127.0.0.1 in a thread for the ``with`` block; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(2000):  # up to 20 s for the socket to open
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("the test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver) of Debian's packages; where either is missing pytest skips with the reason, or
    fails under ``MEDCLS_REQUIRE_BROWSER=1`` (CI, where a skipped browser test would hide a broken page)."""
    import pytest

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        reason = "browser test needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver"
        if os.environ.get("MEDCLS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return browser, driver_path


@contextlib.contextmanager
def headless_chromium(profile_dir: Path, width: int = 1200, height: int = 900):
    """A selenium driver of Debian's Chromium that records every network request (:func:`requested_urls`);
    skips or fails as :func:`chromium_paths` says where Chromium is not installed."""
    browser, driver_path = chromium_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-quic", f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def post_files(url: str, files, **fields) -> tuple[int, dict]:
    """POST ``files`` [(name, bytes)] and form ``fields`` to a shared.serve ``url``'s /api/predict; (status, JSON)."""
    import requests

    response = requests.post(f"{url}/api/predict", files=[("files", f) for f in files], data=fields, timeout=120)
    return response.status_code, response.json()


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (Chromium's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def write_dicom(path: str | Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None) -> Path:
    """An uncompressed 16-bit DICOM file of ``pixels`` ((H, W), or (frames, H, W) for a multi-frame file),
    optionally with a VOI window (center, width)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(pixels, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.SamplesPerPixel, dataset.PhotometricInterpretation = "DX", 1, photometric
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    if pixels.ndim == 3:
        dataset.NumberOfFrames = pixels.shape[0]
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return Path(path)
