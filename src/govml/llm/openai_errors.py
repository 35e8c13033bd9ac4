"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

The ``openai`` SDK turns these into its typed exceptions (``AuthenticationError`` for
401, ``NotFoundError`` for 404, ``RateLimitError`` for 429, ...), so a client handles a
gateway refusal exactly as it would one from OpenAI.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class OpenAIError(Exception):
    """A refusal to answer, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        error.update(self.extra)
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def model_not_found(model: str, available: list[str]) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model {model!r} does not exist on this gateway; available: {', '.join(available)}",
        code="model_not_found",
        param="model",
    )


def rate_limited(message: str, *, retry_after: int) -> OpenAIError:
    return OpenAIError(
        429,
        message,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def content_filtered(message: str, categories: list[str], govml: dict[str, Any]) -> OpenAIError:
    return OpenAIError(
        400,
        message,
        code="content_filter",
        param="messages",
        extra={"categories": categories, "govml": govml},
    )


def backend_unavailable(message: str, *, retry_after: int | None = None) -> OpenAIError:
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return OpenAIError(503, message, type="server_error", code="backend_unavailable", headers=headers)


def backend_failed(message: str, status_code: int = 502) -> OpenAIError:
    return OpenAIError(status_code, message, type="server_error", code="backend_error")
