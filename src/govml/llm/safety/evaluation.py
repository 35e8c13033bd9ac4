"""``evaluate_guard``: precision, recall, F1 and false-positive rate of the prompt guard
on a user's labelled file (CSV or JSONL with ``text`` and ``label``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pydantic import BaseModel

from govml.errors import DataError
from govml.llm.safety.metrics import BinaryMetrics, binary_metrics

_UNSAFE = {"1", "unsafe", "true", "yes"}
_SAFE = {"0", "safe", "false", "no"}


class GuardEvaluation(BaseModel):
    """The guard's decisions on a labelled file, scored against the labels."""

    path: str
    threshold: float
    metrics: BinaryMetrics
    flagged_by_category: dict[str, int]


def _label(value: object, where: str) -> bool:
    token = str(value).strip().lower()
    if token in _UNSAFE:
        return True
    if token in _SAFE:
        return False
    raise DataError(f"{where}: label {value!r} is not one of 0/1, safe/unsafe")


def read_labelled(path: Path) -> tuple[list[str], list[bool]]:
    """Texts and labels (``True`` = unsafe) from a .csv or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    rows: list[tuple[str, dict[str, object]]] = []
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append((f"{path}:{number}", json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"text", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: missing column(s) {sorted(missing)}; need text, label")
            rows = [(f"{path}:{n}", dict(r)) for n, r in enumerate(reader, start=2)]
    else:
        raise DataError(f"{path}: expected a .csv or .jsonl file with columns text and label")
    texts: list[str] = []
    labels: list[bool] = []
    for where, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "label" not in row:
            raise DataError(f"{where}: expected a string 'text' and a 'label'")
        texts.append(row["text"])  # type: ignore[arg-type]
        labels.append(_label(row["label"], where))
    if not texts:
        raise DataError(f"{path} holds no rows")
    return texts, labels


def evaluate_guard(
    path: Path, *, threshold: float = 0.5, head: Path | None = None, batch_size: int = 64
) -> GuardEvaluation:
    """Run the prompt guard (rules and classifier; personal data is not an attack) on
    every row of ``path`` and score its flags against the labels."""
    from govml.llm.safety.guard import PromptGuard

    texts, labels = read_labelled(path)
    guard = PromptGuard(threshold=threshold, head=head, detect_pii=False)
    flagged: list[bool] = []
    by_category: dict[str, int] = {}
    for start in range(0, len(texts), batch_size):
        for result in guard.check_batch(texts[start : start + batch_size]):
            flagged.append(result.flagged)
            if result.flagged:
                for category in result.categories:
                    by_category[category] = by_category.get(category, 0) + 1
    return GuardEvaluation(
        path=str(path),
        threshold=threshold,
        metrics=binary_metrics(labels, flagged),
        flagged_by_category=dict(sorted(by_category.items())),
    )
