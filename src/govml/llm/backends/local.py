"""The ``local`` backend: pick the engine (llama.cpp when installed, else transformers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from govml.errors import ConfigError
from govml.llm.backends.base import Backend
from govml.llm.backends.local_model import resolve_model_file
from govml.llm.config import LocalBackendConfig


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``llama_cpp`` when llama-cpp-python is importable, else ``transformers``."""
    if engine == "auto":
        return "llama_cpp" if llama_cpp_available() else "transformers"
    if engine == "llama_cpp" and not llama_cpp_available():
        raise ConfigError(
            "engine llama_cpp needs llama-cpp-python: `pip install 'govml[llm-fast]'` "
            "(compiles from source, about 12 minutes on 2 cores), or use engine: transformers"
        )
    return engine


def build_local_backend(name: str, config: LocalBackendConfig, *, models_dir: Path) -> Backend:
    """Load the configured GGUF with the chosen engine (slow: do it once at start-up)."""
    gguf = resolve_model_file(config.model_file)
    engine = resolve_engine(config.engine)
    if engine == "llama_cpp":
        from govml.llm.backends.llama_cpp_engine import LlamaCppBackend

        return LlamaCppBackend(
            name, gguf, threads=config.threads, context_tokens=config.context_tokens
        )
    from govml.llm.backends.transformers_engine import TransformersBackend

    return TransformersBackend(
        name,
        gguf,
        models_dir=models_dir,
        threads=config.threads,
        context_tokens=config.context_tokens,
    )
