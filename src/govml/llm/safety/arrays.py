"""Models stored as arrays in an ``.npz`` beside a JSON side-car. Equal arrays give
equal bytes (fixed zip timestamps, no pickle), so the shipped models are rebuilt and
compared byte for byte; the side-car holds the file's sha256, checked on reading."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from govml.errors import DataError


def _array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray], side: dict[str, Any]) -> str:
    """Write ``arrays`` to ``path`` (deflated, in the given order) and ``side`` with the
    file's sha256 (``npz_sha256``) to ``path.with_suffix('.json')``; return the sha256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _array_bytes(array))
    data = buffer.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    side_text = json.dumps({**side, "npz_sha256": digest}, indent=2, sort_keys=True) + "\n"
    path.with_suffix(".json").write_text(side_text)
    return digest


def read_npz(path: Path, *, what: str, format_version: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and side-car written by :func:`write_npz`, after checking that both
    exist, the side-car's ``format_version`` and the file's digest (``what`` names the
    model in the errors)."""
    path = Path(path)
    side_path = path.with_suffix(".json")
    if not path.is_file() or not side_path.is_file():
        raise DataError(f"no {what} at {path} (and {side_path.name}); build one with `govml llm train-guard`")
    raw = path.read_bytes()
    side = json.loads(side_path.read_text())
    if side.get("format_version") != format_version:
        raise DataError(f"{side_path}: unsupported {what} format {side.get('format_version')}")
    if side.get("npz_sha256") != hashlib.sha256(raw).hexdigest():
        raise DataError(f"{path} does not match the digest in {side_path.name}; retrain it")
    with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}, side
