"""The endpoint journal (:mod:`distblob.notifications.journal`): in order, kept across a
reopen, torn tails skipped, compacted as delivered, bounded with a warning, one owner."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from distblob.notifications.journal import Journal, JournalBusyError, MemoryQueue

pytestmark = pytest.mark.timeout(60)


def payloads(count: int, start: int = 0) -> list[bytes]:
    return [f'{{"n":{n}}}'.encode() for n in range(start, start + count)]


def drain(journal: Journal) -> list[bytes]:
    """Read and acknowledge everything, as the sender does."""
    got: list[bytes] = []
    while batch := journal.read(7):
        got += [payload for _, payload in batch]
        journal.ack(batch[-1][0])
    return got


def test_journal_events_come_back_in_order_after_a_reopen(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hook")
    for payload in payloads(50):
        journal.append(payload)
    first = journal.read(10)
    journal.ack(first[-1][0])  # ten delivered
    journal.close()
    reopened = Journal(tmp_path / "hook")
    assert reopened.pending == 40
    assert drain(reopened) == payloads(40, start=10)
    assert reopened.pending == 0
    reopened.close()


def test_journal_unacknowledged_events_are_read_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hook")
    for payload in payloads(3):
        journal.append(payload)
    assert [p for _, p in journal.read(2)] == payloads(2)
    assert [p for _, p in journal.read(2)] == payloads(2)  # not acknowledged: again
    journal.close()


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 15])
def test_journal_torn_tail_is_skipped_not_fatal(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "hook")
    for payload in payloads(5):
        journal.append(payload)
    journal.close()
    (segment,) = sorted((tmp_path / "hook").glob("*.log"))
    whole = segment.read_bytes()
    last = 8 + len(payloads(5)[-1])
    # The last record cut short, as a crash in the middle of its write leaves it.
    segment.write_bytes(whole[: len(whole) - last + min(cut, last - 1)])
    with caplog.at_level(logging.WARNING, "distblob.notifications"):
        reopened = Journal(tmp_path / "hook")
    assert "cut short" in caplog.text
    reopened.append(b'{"n":"after"}')
    assert drain(reopened) == [*payloads(4), b'{"n":"after"}']
    reopened.close()


def test_journal_corrupt_record_ends_the_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hook")
    for payload in payloads(3):
        journal.append(payload)
    journal.close()
    (segment,) = sorted((tmp_path / "hook").glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # the last record's bytes no longer match its checksum
    segment.write_bytes(bytes(data))
    reopened = Journal(tmp_path / "hook")
    assert drain(reopened) == payloads(2)
    reopened.close()


def test_journal_delivered_segments_are_removed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hook", segment_bytes=64)
    for payload in payloads(40):
        journal.append(payload)
    assert len(list((tmp_path / "hook").glob("*.log"))) > 5
    assert drain(journal) == payloads(40)
    assert len(list((tmp_path / "hook").glob("*.log"))) == 1  # only the newest stays
    journal.close()
    reopened = Journal(tmp_path / "hook", segment_bytes=64)
    assert reopened.pending == 0
    reopened.append(b"x")
    assert drain(reopened) == [b"x"]
    reopened.close()


def test_journal_bound_drops_oldest_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path / "hook", "hook", max_events=10, segment_bytes=64)
    with caplog.at_level(logging.WARNING, "distblob.notifications"):
        for payload in payloads(25):
            journal.append(payload)
    assert journal.pending == 10
    assert "dropped" in caplog.text and "hook" in caplog.text
    assert journal.drops.total == 15
    assert drain(journal) == payloads(10, start=15)
    journal.close()


def test_journal_one_process_owns_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hook")
    pid = os.fork()
    if pid == 0:  # another process: the lock is held
        try:
            Journal(tmp_path / "hook")
        except JournalBusyError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    journal.close()
    Journal(tmp_path / "hook").close()  # released on close


def test_memory_queue_is_bounded_and_ordered(caplog: pytest.LogCaptureFixture) -> None:
    queue = MemoryQueue("hook", max_events=3)
    with caplog.at_level(logging.WARNING, "distblob.notifications"):
        for payload in payloads(5):
            queue.append(payload)
    assert caplog.text.count("dropped") == 1  # once, not per event
    assert queue.drops.total == 2
    batch = queue.read(10)
    assert [p for _, p in batch] == payloads(3, start=2)
    queue.ack(batch[0][0])
    assert queue.pending == 2
