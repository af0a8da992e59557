"""Atomic checkpoints that load with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), written to a temporary file in
the same directory, flushed to disk, then renamed over the target, so a run killed at any moment leaves either the old
or the new file, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from negmine.errors import CheckpointError

FORMAT = 1


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (tmp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_tensors(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear :class:`CheckpointError` naming ``what`` and the file
    when it is missing or cannot be read: for negmine checkpoints, and for any other file of tensors and plain values
    a plugin loads (a GAN's or a segmenter's weights: pass ``what="GAN checkpoint"``).

    torch's own message for a file that is not a checkpoint, or that holds pickled objects, advises loading it again
    with ``weights_only=False``, which runs whatever code the file carries; that advice is never passed on."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{what} {str(path)!r} cannot be read: {_unreadable_reason(exc)}") from None


def _unreadable_reason(exc: BaseException) -> str:
    """Why torch could not load a file, in one line and without the weights_only=False advice."""
    text = str(exc)
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip() if "WeightsUnpickler error:" in text else ""
        first = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        if first.startswith("Unsupported global:"):
            name = first.split("GLOBAL", 1)[-1].split(" was not", 1)[0].strip()
            return (f"it holds a pickled Python object ({name}), not only tensors and plain values; negmine never "
                    "loads such files, since unpickling them can run any code")
        return f"it is not a torch file of tensors and plain values (unpickling failed: {first or type(exc).__name__})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"it is not a torch checkpoint, or it is truncated ({first})"


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); a clear error names the file when it is missing or corrupt."""
    state = read_tensors(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a negmine checkpoint of format {FORMAT}")
    return state


def resolve_init(path: str | Path) -> Path:
    """A stage ``init`` path: a checkpoint file, or a run directory (its ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"run directory {str(path)!r} has no checkpoints/last.pt")
    return path
