"""The wire format of OpenAI's chat-completions API, as the gateway accepts and answers it.

Requests are validated into :class:`ChatCompletionRequest`; answers are built as plain
JSON-ready dicts in the exact shape the ``openai`` SDK parses, with the gateway's
``govml`` object added (the SDK keeps unknown fields, under ``model_extra``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from govml.llm.backends.base import ChatMessage, Usage


class _Lenient(BaseModel):
    # clients send fields we do not use (user, logprobs, n=1, ...): accept and ignore them
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class RequestMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    """The fields of a chat-completions request the gateway honours."""

    model: str = Field(min_length=1)
    messages: list[RequestMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        if value is None:
            return 1.0
        return value

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        """The conversation with ``developer`` read as ``system`` (OpenAI treats them alike)."""
        return tuple(
            ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
            for m in self.messages
        )

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def wants_usage_chunk(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_json(
    *,
    request_id: str,
    created: int,
    model: str,
    content: str | None,
    finish_reason: str,
    usage: Usage,
    govml: dict[str, Any],
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_json(usage),
        "system_fingerprint": None,
        "govml": govml,
    }


def chunk_json(
    *,
    request_id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    include_usage_field: bool = False,
    govml: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None`` makes the usage chunk (no choices)."""
    chunk: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage_field:
        # with include_usage every chunk carries the field, null but on the last one
        chunk["usage"] = None if usage is None else usage_json(usage)
    if govml is not None:
        chunk["govml"] = govml
    return chunk


def models_json(models: list[str], *, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "govml"} for m in models
        ],
    }
