"""Append-only, hash-chained audit log: who did what, when, to which model, with which data.

Each line of ``$GOVML_HOME/audit.jsonl`` is one :class:`AuditEntry` whose ``hash`` is the
SHA-256 of its canonical JSON (every field but ``hash``, ``prev_hash`` included), so
each entry commits to the whole history before it. :func:`verify` walks the chain and
names the first entry that was edited, removed, reordered or inserted.

A sidecar file ``audit.head`` holds the sequence number and hash of the last entry;
it catches a log whose tail was cut off. Someone who can rewrite both files can forge
a consistent history, so for a real guarantee copy the head hash (``govml audit head``)
somewhere they cannot write, and check against it with ``verify(expected_head=...)``.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from govml.errors import GovmlError
from govml.paths import govml_home

GENESIS_HASH = "0" * 64
_CHUNK = 4096


class AuditSubject(BaseModel):
    """What an entry is about; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


class AuditEntry(BaseModel):
    """One line of the audit log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    timestamp: str = Field(description="UTC, ISO 8601")
    actor: str
    action: str
    subject: AuditSubject
    details: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="name -> sha256 hex digest")
    outputs: dict[str, str] = Field(default_factory=dict, description="name -> sha256 hex digest")
    prev_hash: str
    hash: str

    def expected_hash(self) -> str:
        """The SHA-256 this entry must carry, computed from its other fields."""
        return _entry_hash(self.model_dump(mode="json", exclude={"hash"}))


class AuditHead(BaseModel):
    """The last entry's position and hash, for anchoring the log outside GOVML_HOME."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    hash: str


class AuditVerification(BaseModel):
    """The outcome of :func:`verify`: ``ok``, or the first bad entry and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    entries: int = Field(description="entries read before the first problem (all if ok)")
    head: AuditHead | None = None
    first_bad_seq: int | None = None
    line: int | None = Field(default=None, description="1-based line of the problem in the log")
    reason: str | None = None


def sha256_hex(value: bytes | str | Path | Mapping[str, Any] | list[Any]) -> str:
    """Digest of a file (Path), raw bytes, text, or JSON-able data (canonical JSON)."""
    digest = hashlib.sha256()
    if isinstance(value, Path):
        with value.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif isinstance(value, bytes):
        digest.update(value)
    elif isinstance(value, str):
        digest.update(value.encode("utf-8"))
    else:
        digest.update(_canonical(value).encode("utf-8"))
    return digest.hexdigest()


def default_actor() -> str:
    """``$GOVML_ACTOR``, else ``user@host``."""
    actor = os.environ.get("GOVML_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid, as in some containers
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def default_audit_path() -> Path:
    return govml_home() / "audit.jsonl"


class AuditLog:
    """The audit log at ``path``; safe to append from several processes at once."""

    def __init__(self, path: str | Path, *, actor: str | None = None) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_suffix(".head")
        self._lock_path = self.path.with_suffix(".lock")
        self._actor = actor

    @classmethod
    def default(cls) -> AuditLog:
        """The log at ``$GOVML_HOME/audit.jsonl``."""
        return cls(default_audit_path())

    def append(
        self,
        action: str,
        subject: AuditSubject | Mapping[str, str | None] | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
    ) -> AuditEntry:
        """Write one entry chained to the last one and return it.

        ``inputs``/``outputs`` map a name to a SHA-256 hex digest (see :func:`sha256_hex`).
        """
        if not action:
            raise ValueError("an audit entry needs an action")
        subject_model = _as_subject(subject)
        for label, hashes in (("inputs", inputs), ("outputs", outputs)):
            for name, digest in (hashes or {}).items():
                if not _is_sha256(digest):
                    raise ValueError(
                        f"audit {label}[{name!r}] is not a sha256 hex digest: {digest!r}"
                    )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            last = self._last_entry()
            body: dict[str, Any] = {
                "seq": 1 if last is None else last.seq + 1,
                "timestamp": datetime.now(UTC).isoformat(timespec="microseconds"),
                "actor": self._actor or default_actor(),
                "action": action,
                "subject": subject_model.model_dump(mode="json"),
                "details": json.loads(_canonical(dict(details or {}))),
                "inputs": dict(inputs or {}),
                "outputs": dict(outputs or {}),
                "prev_hash": GENESIS_HASH if last is None else last.hash,
            }
            entry = AuditEntry.model_validate({**body, "hash": _entry_hash(body)})
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(_canonical(entry.model_dump(mode="json")) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._write_head(AuditHead(seq=entry.seq, hash=entry.hash))
        return entry

    def entries(self, model: str | None = None) -> list[AuditEntry]:
        """All entries in order, or those whose subject is ``model``.

        Raises GovmlError on a line that is not a valid entry (run ``verify`` for why).
        """
        found = []
        for number, line in _lines(self.path):
            try:
                entry = AuditEntry.model_validate_json(line)
            except ValidationError as exc:
                raise GovmlError(
                    f"{self.path}: line {number} is not a valid audit entry; "
                    "run `govml audit verify`"
                ) from exc
            if model is None or entry.subject.model == model:
                found.append(entry)
        return found

    def head(self) -> AuditHead | None:
        """The last entry's seq and hash, or None for an empty log."""
        last = self._last_entry()
        return None if last is None else AuditHead(seq=last.seq, hash=last.hash)

    def verify(self, *, expected_head: str | None = None) -> AuditVerification:
        return verify(self.path, expected_head=expected_head)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _last_entry(self) -> AuditEntry | None:
        if not self.path.exists():
            return None
        with self.path.open("rb") as handle:
            line = _last_line(handle)
        if line is None:
            return None
        try:
            return AuditEntry.model_validate_json(line)
        except ValidationError as exc:
            raise GovmlError(
                f"{self.path}: the last line is not a valid audit entry, refusing to append; "
                "run `govml audit verify`"
            ) from exc

    def _write_head(self, head: AuditHead) -> None:
        tmp = self.head_path.with_suffix(".head.tmp")
        tmp.write_text(head.model_dump_json() + "\n", encoding="utf-8")
        os.replace(tmp, self.head_path)


def verify(path: str | Path, *, expected_head: str | None = None) -> AuditVerification:
    """Walk the chain in ``path`` and report the first entry that breaks it.

    Checks, per line: valid JSON entry, ``hash`` equal to the recomputed one, ``seq`` one
    more than the previous, ``prev_hash`` equal to the previous ``hash``. Then the last
    entry against the sidecar head file and, if given, ``expected_head`` (a hash copied
    out of GOVML_HOME earlier with ``govml audit head``).
    """
    log_path = Path(path)
    if not log_path.exists():
        raise GovmlError(f"{log_path}: no audit log here (nothing has been audited yet?)")
    later_seqs = _seq_lines(log_path)
    previous: AuditEntry | None = None
    seen_hashes: set[str] = set()
    for number, line in _lines(log_path):
        expected_seq = 1 if previous is None else previous.seq + 1
        try:
            entry = AuditEntry.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            reason = f"not a valid entry ({where}: {first['msg']})"
            return _bad(len(seen_hashes), previous, expected_seq, number, reason)
        if entry.hash != entry.expected_hash():
            reason = "content does not match its hash: the entry was edited"
            return _bad(len(seen_hashes), previous, entry.seq, number, reason)
        if entry.seq != expected_seq:
            reason = _seq_problem(entry.seq, expected_seq, later_seqs.get(expected_seq, []), number)
            return _bad(len(seen_hashes), previous, entry.seq, number, reason)
        if entry.prev_hash != (GENESIS_HASH if previous is None else previous.hash):
            reason = (
                "prev_hash does not match the hash of the entry before it: an entry was "
                "replaced or inserted before this one"
            )
            return _bad(len(seen_hashes), previous, entry.seq, number, reason)
        previous = entry
        seen_hashes.add(entry.hash)
    count = len(seen_hashes)
    head = None if previous is None else AuditHead(seq=previous.seq, hash=previous.hash)
    last_seq = 0 if head is None else head.seq
    sidecar = _read_head(log_path.with_suffix(".head"))
    if sidecar is not None and sidecar.seq > last_seq:
        return AuditVerification(
            ok=False,
            entries=count,
            head=head,
            first_bad_seq=last_seq + 1,
            reason=f"the log ends at seq {last_seq} but its head file records seq {sidecar.seq}: "
            "entries were removed from the end",
        )
    if (
        sidecar is not None
        and head is not None
        and sidecar.seq == head.seq
        and sidecar.hash != head.hash
    ):
        return AuditVerification(
            ok=False,
            entries=count,
            head=head,
            first_bad_seq=head.seq,
            reason="the last entry's hash differs from the one in the head file: "
            "the tail was rewritten",
        )
    if expected_head is not None and expected_head not in seen_hashes:
        return AuditVerification(
            ok=False,
            entries=count,
            head=head,
            reason=f"the anchored head hash {expected_head} is not in the log: "
            "it was truncated or rewritten",
        )
    return AuditVerification(ok=True, entries=count, head=head)


def _bad(
    count: int, previous: AuditEntry | None, seq: int, line: int, reason: str
) -> AuditVerification:
    head = None if previous is None else AuditHead(seq=previous.seq, hash=previous.hash)
    return AuditVerification(
        ok=False, entries=count, head=head, first_bad_seq=seq, line=line, reason=reason
    )


def _seq_problem(seq: int, expected: int, lines_with_expected: list[int], line: int) -> str:
    if seq < expected:
        # The chain up to here is intact, so seq was already used by an earlier entry.
        return f"seq {seq} appears twice: an entry was inserted or duplicated here"
    later = [n for n in lines_with_expected if n > line]
    if later:
        return (
            f"expected seq {expected}, found {seq}; seq {expected} comes later "
            f"(line {later[0]}): entries were reordered"
        )
    missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
    return f"expected seq {expected}, found {seq}: {missing} removed"


def _seq_lines(path: Path) -> dict[int, list[int]]:
    """seq -> the lines carrying it, for telling a reordering from a removal."""
    found: dict[int, list[int]] = {}
    for number, line in _lines(path):
        try:
            seq = int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
        found.setdefault(seq, []).append(number)
    return found


def _read_head(path: Path) -> AuditHead | None:
    if not path.exists():
        return None
    try:
        return AuditHead.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise GovmlError(f"{path}: the audit head file is corrupt") from exc


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _last_line(handle: IO[bytes]) -> bytes | None:
    """The last non-empty line of a file, read backwards from its end."""
    handle.seek(0, os.SEEK_END)
    position = handle.tell()
    tail = b""
    while position > 0:
        step = min(_CHUNK, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
        stripped = tail.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
    stripped = tail.rstrip(b"\n")
    return stripped or None


def _as_subject(subject: AuditSubject | Mapping[str, str | None] | None) -> AuditSubject:
    if subject is None:
        return AuditSubject()
    if isinstance(subject, AuditSubject):
        return subject
    return AuditSubject.model_validate(dict(subject))


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _entry_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()
