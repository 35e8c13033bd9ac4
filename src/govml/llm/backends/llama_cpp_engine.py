"""The local model on llama-cpp-python: reads the GGUF directly, several times faster
than transformers on CPU, but the package compiles from source (the ``llm-fast`` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from govml.llm.backends.base import (
    BackendRequestError,
    ChatMessage,
    Completion,
    GenerationRequest,
    StreamChunk,
    Usage,
    collect,
)


def render_chat(template: str, messages: tuple[ChatMessage, ...], *, bos: str, eos: str) -> str:
    """The model's own chat template (from the GGUF metadata) applied to the conversation."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(template).render(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True,
        bos_token=bos,
        eos_token=eos,
    )


class LlamaCppBackend:
    """A GGUF chat model run by llama.cpp in process; one generation at a time."""

    engine = "llama_cpp"

    def __init__(
        self, name: str, gguf: Path, *, threads: int = 1, context_tokens: int = 2048
    ) -> None:
        from llama_cpp import Llama

        self.name = name
        self.model_file = gguf
        self._llm = Llama(
            model_path=str(gguf), n_ctx=context_tokens, n_threads=threads, verbose=False
        )
        self._context_tokens = context_tokens
        metadata: dict[str, str] = dict(self._llm.metadata)
        self._template = metadata.get("tokenizer.chat_template", "")
        if not self._template:
            raise BackendRequestError(
                f"{gguf} has no chat template in its metadata", status_code=500
            )
        self._bos = self._token_text(metadata.get("tokenizer.ggml.bos_token_id"))
        self._eos = self._token_text(metadata.get("tokenizer.ggml.eos_token_id"))
        self._lock = threading.Lock()

    def _token_text(self, token_id: str | None) -> str:
        if token_id is None:
            return ""
        return self._llm.detokenize([int(token_id)], special=True).decode("utf-8", "replace")

    def complete(self, request: GenerationRequest) -> Completion:
        return collect(self.stream(request))

    def stream(self, request: GenerationRequest) -> Iterator[StreamChunk]:
        prompt = render_chat(self._template, request.messages, bos=self._bos, eos=self._eos)
        tokens = self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) + request.max_tokens > self._context_tokens:
            raise BackendRequestError(
                f"the prompt ({len(tokens)} tokens) plus max_tokens ({request.max_tokens}) "
                f"exceeds the model's context of {self._context_tokens} tokens",
                status_code=400,
            )
        options: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": [*request.stop, self._eos] if self._eos else list(request.stop),
            "stream": True,
        }
        if request.seed is not None:
            options["seed"] = request.seed
        finish = "stop"
        completion_tokens = 0
        with self._lock:
            pieces = self._llm.create_completion(tokens, **options)
            try:
                for piece in pieces:
                    choice = piece["choices"][0]
                    completion_tokens += 1
                    if choice.get("text"):
                        yield StreamChunk(text=choice["text"])
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            finally:
                pieces.close()
            # the context holds the prompt and every token evaluated since
            completion_tokens = max(0, int(self._llm.n_tokens) - len(tokens)) or completion_tokens
        yield StreamChunk(
            finish_reason="length" if finish == "length" else "stop",
            usage=Usage(prompt_tokens=len(tokens), completion_tokens=completion_tokens),
        )

    def close(self) -> None:
        self._llm.close()
