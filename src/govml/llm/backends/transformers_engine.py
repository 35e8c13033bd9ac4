"""The local model on transformers + torch (CPU): no compiler needed, slower than llama.cpp.

transformers de-quantises the GGUF into float32 torch weights. That conversion takes
tens of seconds on 2 cores, so the converted model is written once to
``$GOVML_HOME/llm/models/`` (safetensors) and loaded from there afterwards (about 2 s).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from govml.llm.backends.base import (
    BackendRequestError,
    Completion,
    GenerationRequest,
    StreamChunk,
    Usage,
    collect,
)
from govml.llm.backends.local_model import file_fingerprint

# a token that takes longer than this means the generation thread died
_TOKEN_TIMEOUT_SECONDS = 120.0


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def converted_model_dir(gguf: Path, models_dir: Path) -> Path:
    """A float32 safetensors copy of ``gguf`` under ``models_dir``, converted on first use."""
    target = models_dir / f"{gguf.stem}-{file_fingerprint(gguf)}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # the weights are plain float32 once de-quantised; the GGUF marker only blocks saving
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=models_dir))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class _Cancelled:
    """A stopping criterion that ends generation when the client goes away."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        return self._event.is_set()


class TransformersBackend:
    """A GGUF chat model run by transformers on CPU; one generation at a time."""

    engine = "transformers"

    def __init__(
        self,
        name: str,
        gguf: Path,
        *,
        models_dir: Path,
        threads: int = 1,
        context_tokens: int = 2048,
    ) -> None:
        _quiet_transformers()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.model_file = gguf
        self._context_tokens = context_tokens
        torch.set_num_threads(threads)
        folder = converted_model_dir(gguf, models_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        self._model.eval()
        eos = self._model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._lock = threading.Lock()

    def _encode(self, request: GenerationRequest) -> Any:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        encoded: Any = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_tokens = int(encoded["input_ids"].shape[1])
        if prompt_tokens + request.max_tokens > self._context_tokens:
            raise BackendRequestError(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) "
                f"exceeds the model's context of {self._context_tokens} tokens",
                status_code=400,
            )
        return encoded

    def complete(self, request: GenerationRequest) -> Completion:
        return collect(self.stream(request))

    def stream(self, request: GenerationRequest) -> Iterator[StreamChunk]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        encoded = self._encode(request)
        prompt_tokens = int(encoded["input_ids"].shape[1])
        streamer = TextIteratorStreamer(
            self._tokenizer,
            skip_prompt=True,
            skip_special_tokens=True,
            timeout=_TOKEN_TIMEOUT_SECONDS,
        )
        cancel = threading.Event()
        outcome: dict[str, Any] = {}
        options: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "do_sample": request.temperature > 0,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancelled(cancel)]),
            "pad_token_id": self._tokenizer.pad_token_id or next(iter(self._eos_ids), None),
        }
        if request.temperature > 0:
            options.update(temperature=request.temperature, top_p=request.top_p)
        if request.stop:
            options.update(stop_strings=list(request.stop), tokenizer=self._tokenizer)

        def generate() -> None:
            try:
                with torch.inference_mode():
                    outcome["ids"] = self._model.generate(**encoded, **options)
            except Exception as exc:  # handed to the consumer thread below
                outcome["error"] = exc
                streamer.end()

        with self._lock:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            worker = threading.Thread(
                target=generate, name=f"govml-generate-{self.name}", daemon=True
            )
            worker.start()
            try:
                for text in streamer:
                    if text:
                        yield StreamChunk(text=text)
            finally:
                cancel.set()
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        new_ids = [int(i) for i in outcome["ids"][0, prompt_tokens:]]
        generated = [i for i in new_ids if i not in self._eos_ids]
        hit_limit = len(new_ids) >= request.max_tokens and (
            not new_ids or new_ids[-1] not in self._eos_ids
        )
        yield StreamChunk(
            finish_reason="length" if hit_limit else "stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(generated)),
        )

    def close(self) -> None:
        """Nothing to release: the weights go with the object."""
