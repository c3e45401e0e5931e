"""Helpers for the projects' tests: a free local port and TensorBoard logs read back independent of file names.

TensorBoard orders a folder's event files by name, and a writer's name holds the second it opened and a
per-process counter: two writers opened in the same second by one process (a run and its resume inside
one test) can sort in either order ("...5.10" before "...5.9"). :func:`read_scalars` orders the files by
the wall time of their first event instead, then applies each writer's purge step as TensorBoard does.
"""
from __future__ import annotations

import socket
from pathlib import Path

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
