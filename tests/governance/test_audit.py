"""The audit log: chaining, concurrent appends and every kind of tampering."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from govml.errors import GovmlError
from govml.governance.audit import (
    GENESIS_HASH,
    AuditLog,
    AuditSubject,
    default_actor,
    sha256_hex,
    verify,
)


def _filled_log(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path, actor="tester@host")
    for i in range(n):
        log.append(
            "stage.train" if i % 2 else "model.register",
            {"model": "credit-risk" if i < 3 else "other", "version": str(i + 1)},
            details={"step": i, "note": "ünïcode ok"},
            inputs={"data": sha256_hex(f"input {i}")},
            outputs={"model": sha256_hex(b"model bytes %d" % i)},
        )
    return log


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def test_entries_are_chained_and_verify(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "audit.jsonl")
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.prev_hash == before.hash
    assert all(e.hash == e.expected_hash() for e in entries)
    assert entries[0].actor == "tester@host"
    assert entries[0].timestamp.endswith("+00:00")
    result = log.verify()
    assert result.ok and result.entries == 5 and result.first_bad_seq is None
    assert result.head is not None and result.head.hash == entries[-1].hash


def test_entries_filter_by_model(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "audit.jsonl")
    assert [e.seq for e in log.entries(model="credit-risk")] == [1, 2, 3]
    assert [e.seq for e in log.entries(model="other")] == [4, 5]
    assert log.entries(model="missing") == []


def test_edited_entry_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled_log(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["actor"] = "mallory@evil"
    lines[2] = json.dumps(entry) + "\n"
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok
    assert result.first_bad_seq == 3 and result.line == 3
    assert "edited" in (result.reason or "")
    assert result.entries == 2


def test_edited_entry_with_recomputed_hash_is_caught_by_next_link(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _filled_log(path)
    entries = log.entries()
    forged = entries[1].model_copy(update={"details": {"step": 99}})
    forged = forged.model_copy(update={"hash": forged.expected_hash()})
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = forged.model_dump_json() + "\n"
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "prev_hash" in (result.reason or "")


def test_deleted_entry_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled_log(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[1]
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "seq 2 removed" in (result.reason or "")


def test_deleted_first_entry_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled_log(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    _rewrite(path, lines[1:])
    result = verify(path)
    assert not result.ok and result.first_bad_seq == 2 and "seq 1 removed" in (result.reason or "")


def test_reordered_entries_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled_log(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok
    assert result.line == 2 and result.first_bad_seq == 3
    assert "reordered" in (result.reason or "")


def test_inserted_entry_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _filled_log(path)
    entries = log.entries()
    # A well-formed forgery that links correctly to entry 2 and reuses seq 3.
    body = entries[2].model_dump(mode="json", exclude={"hash"})
    body.update(prev_hash=entries[1].hash, action="model.promote", details={"forged": True})
    forged = entries[2].model_validate({**body, "hash": "0" * 64})
    forged = forged.model_copy(update={"hash": forged.expected_hash()})
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(2, forged.model_dump_json() + "\n")
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok
    assert result.line == 4 and result.first_bad_seq == 3
    assert "inserted" in (result.reason or "")


def test_truncated_tail_is_caught_by_head_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled_log(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    _rewrite(path, lines[:3])
    result = verify(path)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert "removed from the end" in (result.reason or "")


def test_truncation_with_head_file_removed_needs_external_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _filled_log(path)
    anchored = log.head()
    assert anchored is not None
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    _rewrite(path, lines[:3])
    log.head_path.unlink()
    assert verify(path).ok  # honest limit: no anchor, no way to know
    result = verify(path, expected_head=anchored.hash)
    assert not result.ok and "anchored head hash" in (result.reason or "")


def test_anchor_stays_valid_after_later_appends(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _filled_log(path, n=2)
    anchored = log.head()
    assert anchored is not None
    log.append("server.start", AuditSubject(model="credit-risk", alias="champion"))
    assert verify(path, expected_head=anchored.hash).ok


def test_garbage_line_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _filled_log(path, n=3)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    result = verify(path)
    assert not result.ok and result.line == 4 and "not a valid entry" in (result.reason or "")
    with pytest.raises(GovmlError, match="refusing to append"):
        AuditLog(path).append("run.start")
    with pytest.raises(GovmlError, match="line 4"):
        AuditLog(path).entries()


def test_bad_inputs_are_rejected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="not a sha256"):
        log.append("run.start", inputs={"data": "not-a-digest"})
    with pytest.raises(ValueError, match="needs an action"):
        log.append("")
    with pytest.raises(ValueError):
        log.append("run.start", {"modle": "typo"})
    assert not log.path.exists() or log.entries() == []
    with pytest.raises(GovmlError, match="no audit log"):
        verify(tmp_path / "missing.jsonl")


def test_default_path_and_actor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOVML_ACTOR", "ci-bot")
    entry = AuditLog.default().append("run.start", {"run_id": "abc"})
    assert entry.actor == "ci-bot"
    assert (tmp_path / "home" / "audit.jsonl").exists()
    monkeypatch.delenv("GOVML_ACTOR")
    assert "@" in default_actor()


def test_sha256_of_file_matches_bytes(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n1,2\n")
    assert sha256_hex(data) == sha256_hex(b"a,b\n1,2\n")
    assert sha256_hex({"b": 1, "a": 2}) == sha256_hex({"a": 2, "b": 1})


def _append_many(path: str, worker: int, n: int) -> None:
    log = AuditLog(path, actor=f"worker{worker}")
    for i in range(n):
        log.append("stage.test", details={"worker": worker, "i": i})


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(str(path), w, 25)) for w in range(4)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    result = verify(path)
    assert result.ok, result.reason
    assert result.entries == 100
