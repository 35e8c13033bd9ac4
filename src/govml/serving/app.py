"""The FastAPI app of ``govml serve``: MLflow scoring, Open Inference Protocol v2, explanations, metrics.

Handlers stay thin: an ``async`` handler reads the body (with a size limit) and hands
the CPU work (parsing, validation, prediction) to a worker thread. Monitoring is a
record put on a queue. Cross-cutting concerns (API keys, latency and status metrics,
turning an unexpected error into a 500 JSON answer) live in one ASGI middleware.
``POST /invocations``, the hot route, is a plain ASGI handler behind that middleware,
ahead of FastAPI's stack; FastAPI still declares it for the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import govml
from govml.serving import openapi
from govml.serving.explain import ExplanationUnavailable, TreeRowExplainer
from govml.serving.loading import LoadedModel
from govml.serving.monitoring import CarbonSettings, LogRecord, PredictionLog, ServingMetrics, score_for_histogram
from govml.serving.payload import RawBatch, RequestError, parse_invocation, parse_v2_infer
from govml.serving.predictor import Prediction, Predictor
from govml.serving.validation import InputValidator

_log = logging.getLogger(__name__)
SCORES_PER_REQUEST = 64
UNAUTHENTICATED_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/ping", "/health"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True)
class ServeSettings:
    """Limits and switches of one server."""

    home: Path
    carbon: CarbonSettings
    api_keys: frozenset[str] = frozenset()
    max_body_bytes: int = 16 * 1024 * 1024
    max_rows: int = 100_000
    max_explain_rows: int = 1_000
    log_predictions: bool = True
    prediction_log_url: str | None = None  # a storage URL (govml.storage); default: home / predictions.db
    drift_window: int = 5_000
    drift_every: int = 500
    drift_min_seconds: float = 5.0
    drift_thresholds: dict[str, float] = field(default_factory=dict)


class _ModelMetrics:
    """The model's labelled metric children, looked up once (``labels()`` takes a lock and a dict lookup)."""

    def __init__(self, metrics: ServingMetrics, name: str) -> None:
        self.predictions = metrics.predictions.labels(name)
        self.score = metrics.score.labels(name)
        self.energy = metrics.energy.labels(name)
        self.carbon = metrics.carbon.labels(name)
        self.carbon_per_prediction = metrics.carbon_per_prediction.labels(name)
        self._predicted_class = metrics.predicted_class
        self._name = name
        self._classes: dict[Any, Any] = {}

    def predicted_class(self, label: Any) -> Any:
        child = self._classes.get(label)
        if child is None:
            child = self._classes[label] = self._predicted_class.labels(self._name, str(label))
        return child


class ServingState:
    """Everything the handlers share: the model, its validator and predictor, metrics and the log."""

    def __init__(self, model: LoadedModel, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        fallback = [str(c) for c in getattr(model.sklearn_model, "feature_names_in_", [])]
        self.validator = InputValidator.from_model(model.signature, model.schema_json, fallback_columns=fallback)
        self.predictor = Predictor(model, self.validator)
        self.metrics = ServingMetrics(model.ref.name)
        self.metrics.info.labels(model.ref.name, model.ref.version or "", self.predictor.path).set(1)
        self._model_metrics = _ModelMetrics(self.metrics, model.ref.name)
        self.explainer: TreeRowExplainer | None = None
        self.explain_unavailable: str | None = None
        try:
            self.explainer = TreeRowExplainer(model)
        except ExplanationUnavailable as exc:
            self.explain_unavailable = str(exc)
        self.log: PredictionLog | None = None
        if settings.log_predictions:
            self.log = PredictionLog(
                settings.prediction_log_url or settings.home / "predictions.db",
                model=model.ref.name,
                version=model.ref.version,
                metrics=self.metrics,
                reference=model.drift_reference,
                window=settings.drift_window,
                drift_every=settings.drift_every,
                drift_min_seconds=settings.drift_min_seconds,
                thresholds=settings.drift_thresholds,
            )

    # --- the CPU work, run on worker threads -------------------------------------------

    def _score(self, batch: RawBatch, endpoint: str, started: float) -> Prediction:
        if batch.n_rows > self.settings.max_rows:
            raise RequestError(f"{batch.n_rows} rows exceed the limit of {self.settings.max_rows}", status=413)
        validated = self.validator.validate(batch)
        cpu_start = time.thread_time()
        prediction = self.predictor.predict(validated)
        self._observe(prediction, validated.n_rows, time.thread_time() - cpu_start)
        if self.log is not None:
            self.log.submit(
                LogRecord(
                    ts=time.time(), endpoint=endpoint, inputs=validated, labels=prediction.labels,
                    probabilities=prediction.probabilities, latency_ms=(time.perf_counter() - started) * 1000,
                )
            )
        return prediction

    def _observe(self, prediction: Prediction, rows: int, cpu_seconds: float) -> None:
        m = self._model_metrics
        m.predictions.inc(rows)
        if prediction.classes is not None:
            if rows <= SCORES_PER_REQUEST:  # np.unique costs more than counting a few labels
                counts: dict[Any, int] = {}
                for label in prediction.labels.tolist():
                    counts[label] = counts.get(label, 0) + 1
            else:
                labels, totals = np.unique(prediction.labels, return_counts=True)
                counts = dict(zip(labels.tolist(), totals.tolist(), strict=True))
            for label, count in counts.items():
                m.predicted_class(label).inc(count)
        scores = score_for_histogram(prediction.probabilities, prediction.labels)
        if scores is not None:
            step = max(1, len(scores) // SCORES_PER_REQUEST)  # a large batch contributes an even sample
            for value in scores[::step].tolist():
                m.score.observe(value)
        carbon = self.settings.carbon
        m.energy.inc(carbon.energy_kwh(cpu_seconds))
        grams = carbon.emissions_g(cpu_seconds)
        m.carbon.inc(grams)
        m.carbon_per_prediction.set(grams / max(rows, 1))

    def invoke(self, body: bytes, content_type: str | None) -> bytes:
        started = time.perf_counter()
        batch = parse_invocation(body, content_type, self.validator.input_names)
        prediction = self._score(batch, "invocations", started)
        return json.dumps({"predictions": prediction.labels.tolist()}).encode()

    def infer_v2(self, body: bytes) -> bytes:
        started = time.perf_counter()
        request = parse_v2_infer(body, self.validator.input_names)
        prediction = self._score(request.batch, "v2_infer", started)
        outputs = [_tensor("predict", prediction.labels)]
        if prediction.probabilities is not None:
            outputs.append(_tensor("predict_proba", prediction.probabilities))
        if request.outputs:
            unknown = sorted(set(request.outputs) - {o["name"] for o in outputs})
            if unknown:
                raise RequestError(f"unknown outputs {unknown}; this model has predict, predict_proba", status=400)
            outputs = [o for o in outputs if o["name"] in request.outputs]
        response: dict[str, Any] = {
            "model_name": self.model.ref.name,
            "model_version": self.model.ref.version or "",
            "outputs": outputs,
        }
        if request.request_id is not None:
            response["id"] = request.request_id
        return json.dumps(response).encode()

    def explain(self, body: bytes, content_type: str | None) -> bytes:
        if self.explainer is None:
            raise RequestError(f"explanations are unavailable for this model: {self.explain_unavailable}", status=501)
        batch = parse_invocation(body, content_type, self.validator.input_names)
        if batch.n_rows > self.settings.max_explain_rows:
            raise RequestError(
                f"{batch.n_rows} rows exceed the explanation limit of {self.settings.max_explain_rows}", status=413
            )
        validated = self.validator.validate(batch)
        prediction = self.predictor.predict(validated)
        result = self.explainer.explain(self.predictor.transform(validated))
        return json.dumps(
            {
                "feature_names": result.feature_names,
                "base_value": result.base_value,
                "output": result.output,
                "shap_values": np.round(result.values, 10).tolist(),
                "predictions": prediction.labels.tolist(),
            }
        ).encode()

    def metadata(self) -> dict[str, Any]:
        ref = self.model.ref
        outputs = [{"name": "predict", "datatype": _datatype_of_labels(self.model), "shape": [-1]}]
        if self.model.sklearn_model is not None and hasattr(self.model.sklearn_model, "predict_proba"):
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]})
        return {
            "name": ref.name,
            "versions": [ref.version] if ref.version else [],
            "platform": "govml-sklearn" if self.model.sklearn_model is not None else "mlflow-pyfunc",
            "inputs": [
                {"name": r.name, "datatype": _V2_TYPES.get(r.kind, "BYTES"), "shape": [-1]}
                for r in self.validator.rules
            ],
            "outputs": outputs,
            "parameters": {
                "model_uri": ref.uri,
                "run_id": ref.run_id,
                **self.predictor.describe(),
                "validation": self.validator.source,
                "input_rules": self.validator.describe(),
                "explanations": "available" if self.explainer else f"unavailable: {self.explain_unavailable}",
                "drift": "available" if self.model.drift_reference else "unavailable: no drift reference",
                "notes": self.model.notes,
            },
        }


_V2_TYPES = {"integer": "INT64", "float": "FP64", "string": "BYTES", "boolean": "BOOL", "any": "BYTES"}


def _datatype_of_labels(model: LoadedModel) -> str:
    classes = getattr(model.sklearn_model, "classes_", None)
    if classes is None:
        return "FP64"
    kind = np.asarray(classes).dtype.kind
    return {"i": "INT64", "u": "INT64", "f": "FP64", "b": "BOOL"}.get(kind, "BYTES")


def _tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    kind = values.dtype.kind
    datatype = {"i": "INT64", "u": "UINT64", "f": "FP64", "b": "BOOL"}.get(kind, "BYTES")
    data = values.reshape(-1).tolist() if kind in "iufb" else [str(v) for v in values.reshape(-1).tolist()]
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": data}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body ({declared} bytes) exceeds the limit of {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body exceeds the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive_body(receive: Callable[[], Awaitable[Message]], declared: bytes | None, limit: int) -> bytes | None:
    """The request body from raw ASGI messages, with the limit of :func:`_read_body`; None when the client left."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body ({declared.decode()} bytes) exceeds the limit of {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body exceeds the limit of {limit} bytes", status=413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_json(send: Callable[[Message], Awaitable[None]], status: int, content: bytes) -> None:
    headers = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class InvocationsEndpoint:
    """``POST /invocations`` as a plain ASGI app, the route one-row traffic takes.

    FastAPI still declares the route (for ``/docs`` and the OpenAPI schema) and would answer
    the same way, but its middleware, routing and request objects cost more per request than
    the prediction; :class:`ServingApp` sends these requests here, behind the same guard.
    """

    def __init__(self, state: ServingState) -> None:
        self.state = state
        # Its own worker threads: handing work to a plain executor costs about half of what
        # anyio's thread hop (capacity limiter, cancel scope) does per request.
        self.executor = ThreadPoolExecutor(thread_name_prefix="govml-invocations")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        declared = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        try:
            body = await _receive_body(receive, declared, self.state.settings.max_body_bytes)
            if body is None:
                return  # the client went away; nobody to answer
            loop = asyncio.get_running_loop()
            content = await loop.run_in_executor(self.executor, self.state.invoke, body, content_type)
        except RequestError as exc:
            await _send_json(send, exc.status, json.dumps(exc.body()).encode())
            return
        await _send_json(send, 200, content)


class ServingApp(FastAPI):
    """FastAPI with ``POST /invocations`` answered by :class:`InvocationsEndpoint` behind
    :class:`GuardMiddleware`, ahead of FastAPI's own middleware stack and router."""

    invocations: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            self.invocations is not None
            and scope["type"] == "http"
            and scope["path"] == "/invocations"
            and scope["method"] == "POST"
            and not self.root_path
        ):
            await self.invocations(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _error(exc: RequestError) -> Response:
    return Response(json.dumps(exc.body()), status_code=exc.status, media_type="application/json")


class GuardMiddleware:
    """API keys, request metrics, and a JSON 500 for anything unexpected (the server stays up)."""

    def __init__(self, app: ASGIApp, *, state: ServingState) -> None:
        self.app = app
        self.state = state
        self._children: dict[tuple[str, ...], Any] = {}  # labelled metric children, looked up once

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (str(id(metric)), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = _endpoint_label(path)
        started = time.perf_counter()
        status_holder = {"status": 500, "sent": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["sent"] = True
            await send(message)

        keys = self.state.settings.api_keys
        if keys and path not in UNAUTHENTICATED_PATHS and not _authorised(scope, keys):
            response = JSONResponse(
                {
                    "error_code": "UNAUTHENTICATED",
                    "message": "a valid API key is required (Authorization: Bearer KEY or X-API-Key)",
                },
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send_wrapper)
        else:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:  # the last line of defence: log it, answer 500, keep serving
                _log.exception("unhandled error on %s", path)
                self.state.metrics.errors.labels(endpoint, "internal").inc()
                if not status_holder["sent"]:
                    response = JSONResponse(
                        {"error_code": "INTERNAL_ERROR", "message": "the server failed on this request; it is logged"},
                        status_code=500,
                    )
                    await response(scope, receive, send_wrapper)
        status = status_holder["status"]
        metrics = self.state.metrics
        self._child(metrics.requests, endpoint, str(status)).inc()
        self._child(metrics.latency, endpoint).observe(time.perf_counter() - started)
        if 400 <= status < 500:
            self._child(metrics.errors, endpoint, str(status)).inc()


def _endpoint_label(path: str) -> str:
    if path.startswith("/v2/models/"):
        return "v2_infer" if path.endswith("/infer") else "v2_model"
    return path.strip("/").replace("/", "_") or "root"


def _authorised(scope: Scope, keys: frozenset[str]) -> bool:
    presented: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1")
            if text.lower().startswith("bearer "):
                presented.append(text[7:].strip())
        elif name == b"x-api-key":
            presented.append(value.decode("latin-1").strip())
    return any(hmac.compare_digest(p.encode(), k.encode()) for p in presented for k in keys)


def create_app(model: LoadedModel, settings: ServeSettings) -> FastAPI:
    """Build the app for one loaded model; the prediction log starts and stops with the app."""
    state = ServingState(model, settings)
    name = model.ref.name
    invocations_endpoint = InvocationsEndpoint(state)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if state.log is not None:
            state.log.start()
        yield
        invocations_endpoint.executor.shutdown(wait=False)
        if state.log is not None:
            await anyio.to_thread.run_sync(state.log.close)

    app = ServingApp(
        title=f"govml serve: {name}",
        version=govml.__version__,
        description="Predictions, explanations and monitoring for a registered model.",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.add_middleware(GuardMiddleware, state=state)
    app.invocations = GuardMiddleware(invocations_endpoint, state=state)

    async def run(func: Callable[..., bytes], *args: Any) -> Response:
        try:
            content = await anyio.to_thread.run_sync(func, *args)
        except RequestError as exc:
            return _error(exc)
        return Response(content, media_type="application/json")

    @app.post("/invocations", openapi_extra=openapi.invocations_body(state.validator), responses=openapi.ERRORS,
              summary="Predict (MLflow scoring protocol)")
    async def invocations(request: Request) -> Response:
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except RequestError as exc:
            return _error(exc)
        return await run(state.invoke, body, request.headers.get("content-type"))

    @app.post("/explain", openapi_extra=openapi.invocations_body(state.validator), responses=openapi.ERRORS,
              summary="SHAP values per row, per raw feature")
    async def explain(request: Request) -> Response:
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except RequestError as exc:
            return _error(exc)
        return await run(state.explain, body, request.headers.get("content-type"))

    @app.get("/ping", summary="MLflow health check")
    @app.get("/health", include_in_schema=False)
    async def ping() -> Response:
        return Response("\n", media_type="application/json")

    @app.get("/v2/health/live", summary="v2: server is live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="v2: server is ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2", summary="v2: server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "govml", "version": govml.__version__, "extensions": ["metrics", "explain"]}

    def _unknown(model_name: str) -> Response:
        return JSONResponse({"error": f"unknown model {model_name!r}; this server serves {name!r}"}, status_code=404)

    @app.get("/v2/models/{model_name}", summary="v2: model metadata")
    @app.get("/v2/models/{model_name}/versions/{model_version}", include_in_schema=False)
    async def model_metadata(model_name: str, model_version: str | None = None) -> Response:
        if model_name != name or (model_version and model_version != (model.ref.version or "")):
            return _unknown(model_name)
        return JSONResponse(state.metadata())

    @app.get("/v2/models/{model_name}/ready", summary="v2: model is ready")
    async def model_ready(model_name: str) -> Response:
        if model_name != name:
            return _unknown(model_name)
        return JSONResponse({"name": name, "ready": True})

    @app.post("/v2/models/{model_name}/infer", openapi_extra=openapi.v2_body(state.validator),
              responses=openapi.ERRORS, summary="v2: inference with one named tensor per column")
    @app.post("/v2/models/{model_name}/versions/{model_version}/infer", include_in_schema=False)
    async def infer(model_name: str, request: Request, model_version: str | None = None) -> Response:
        if model_name != name or (model_version and model_version != (model.ref.version or "")):
            return _unknown(model_name)
        try:
            body = await _read_body(request, settings.max_body_bytes)
            content = await anyio.to_thread.run_sync(state.infer_v2, body)
        except RequestError as exc:
            return JSONResponse({"error": exc.message, **exc.body()}, status_code=exc.status)
        return Response(content, media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
