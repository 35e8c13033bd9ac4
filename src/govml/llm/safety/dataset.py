"""Labelled prompts for the guard's classifier, read from ``shared/data/llm`` and the
project's own benign prompts, each tagged with the source and group it belongs to so
that evaluation can hold out whole sources and families instead of single rows."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from random import Random

from govml.errors import DataError

SAFE = "safe"
TOXIC = "toxic"
CATEGORIES: tuple[str, ...] = ("jailbreak", "harmful", TOXIC)
BENIGN_PROMPTS = Path(__file__).with_name("benign_prompts.json")

_FILES = {
    "jailbreak": "jailbreak_templates.jsonl",
    "harmful": "harmful_requests.jsonl",
    "toxicity": "toxicity_labeled.csv",
    "roleplay": "benign_roleplay.jsonl",
    "paraphrase": "paraphrase_pairs.json",
}


@dataclass(frozen=True)
class Example:
    """One prompt with its label (a category or ``safe``), source and group key.

    ``group`` names the unit that must stay on one side of a train/test split: a
    jailbreak family, a role-play act, a paraphrase pair, a project topic.
    """

    text: str
    label: str
    source: str
    group: str

    @property
    def unsafe(self) -> bool:
        return self.label != SAFE


def jailbreak_family(name: str, source: str) -> str:
    """Family of a PyRIT jailbreak template: ``pliny/<vendor>`` for Pliny's model-specific
    prompts, ``nesting`` for the nesting attacks, the DAN variants together, otherwise the
    template name without its version suffix (``based_gpt_2`` -> ``based_gpt``)."""
    parts = source.split("/jailbreak/", 1)[-1].split("/")
    if len(parts) >= 3 and parts[0] == "pliny":
        return f"pliny/{parts[1]}"
    if name.endswith("_nesting"):
        return "nesting"
    if "dan" in name.split("_"):
        return "dan"
    return re.sub(r"(_v?\d+)+$", "", name)


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{path}:{number}: expected an object with a string 'text'")
            rows.append(row)
    return rows


def _require(data_dir: Path) -> None:
    missing = [name for name in _FILES.values() if not (data_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{data_dir} lacks {', '.join(missing)}; point --data-dir at the folder that holds "
            "the gateway's text data (shared/data/llm)"
        )


def _toxicity(path: Path, *, toxic_sample: int, rng: Random) -> list[Example]:
    toxic: list[str] = []
    neutral: list[str] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            tweet, klass = row.get("tweet"), row.get("class")
            if tweet is None or klass not in {"0", "1", "2"}:
                raise DataError(f"{path}: expected columns 'tweet' and 'class' (0, 1 or 2)")
            (neutral if klass == "2" else toxic).append(tweet)
    toxic = rng.sample(toxic, min(toxic_sample, len(toxic)))
    src = "toxicity_labeled.csv"
    # tweets carry no family; each is its own group until near-duplicates are merged
    return [Example(t, "toxic", f"{src}:toxic", f"tweet:{i}") for i, t in enumerate(toxic)] + [
        Example(t, SAFE, f"{src}:neutral", f"tweet-n:{i}") for i, t in enumerate(neutral)
    ]


def load_examples(data_dir: Path, *, toxic_sample: int = 2500, seed: int = 0) -> list[Example]:
    """All labelled examples, in a deterministic order (``toxic_sample`` tweets of
    classes 0/1 drawn with ``seed``; every neutral tweet)."""
    data_dir = Path(data_dir)
    _require(data_dir)
    rng = Random(seed)
    out: list[Example] = []
    for row in _read_jsonl(data_dir / _FILES["jailbreak"]):
        family = jailbreak_family(row.get("name", ""), row.get("source", ""))
        out.append(Example(row["text"], "jailbreak", "jailbreak_templates", f"jb:{family}"))
    for i, row in enumerate(_read_jsonl(data_dir / _FILES["harmful"])):
        out.append(Example(row["text"], "harmful", "harmful_requests", f"harm:{i}"))
    out.extend(_toxicity(data_dir / _FILES["toxicity"], toxic_sample=toxic_sample, rng=rng))
    for row in _read_jsonl(data_dir / _FILES["roleplay"]):
        out.append(Example(row["text"], SAFE, "benign_roleplay", f"act:{row.get('act', '')}"))
    pairs = json.loads((data_dir / _FILES["paraphrase"]).read_text(encoding="utf-8"))
    for i, pair in enumerate(pairs):
        for key in ("origin", "similar"):
            out.append(Example(pair[key], SAFE, "paraphrase_pairs", f"pair:{i}"))
    for row in json.loads(BENIGN_PROMPTS.read_text(encoding="utf-8"))["rows"]:
        out.append(
            Example(row["text"], SAFE, f"govml_benign:{row['kind']}", f"topic:{row['topic']}")
        )
    return out


def merge_near_duplicates(
    examples: Sequence[Example], vectors: object, *, threshold: dict[str, float]
) -> list[str]:
    """Group keys after joining examples of one source whose embeddings have cosine
    >= ``threshold[source prefix]`` (connected components), so paraphrases and
    near-duplicates land on the same side of a split."""
    import numpy as np

    vecs = np.asarray(vectors, dtype=np.float32)
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first_of_group: dict[str, int] = {}
    for i, ex in enumerate(examples):
        union(i, first_of_group.setdefault(ex.group, i))
    by_source: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_source.setdefault(ex.source, []).append(i)
    for source, idx in by_source.items():
        cut = next((v for k, v in threshold.items() if source.startswith(k)), None)
        if cut is None:
            continue
        sims = vecs[idx] @ vecs[idx].T
        rows, cols = np.nonzero(np.triu(sims >= cut, k=1))
        for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
            union(idx[a], idx[b])
    return [examples[find(i)].group for i in range(len(examples))]


def source_split(
    examples: Sequence[Example], groups: Sequence[str], *, test_fraction: float, seed: int
) -> list[bool]:
    """``True`` for the examples held out: per source, whole groups in a seeded order
    until about ``test_fraction`` of that source's rows are held out."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    held = [False] * len(examples)
    by_source: dict[str, dict[str, list[int]]] = {}
    for i, (ex, group) in enumerate(zip(examples, groups, strict=True)):
        by_source.setdefault(ex.source, {}).setdefault(group, []).append(i)
    for source in sorted(by_source):
        members = by_source[source]
        order = sorted(members)
        Random(f"{seed}:{source}").shuffle(order)
        target = test_fraction * sum(len(v) for v in members.values())
        taken = 0
        for group in order:
            if taken >= target:
                break
            for i in members[group]:
                held[i] = True
            taken += len(members[group])
    return held
