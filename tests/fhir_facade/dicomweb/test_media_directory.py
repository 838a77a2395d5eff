"""media_directory.Directories: DICOMDIRs and instance headers kept between ZIP downloads, each cache within
its bound, least recently used first out."""
from __future__ import annotations

import threading

import pytest

from fhir_facade.dicomweb import media_directory
from fhir_facade.dicomweb.media_directory import Directories


def identity(n: int) -> tuple:
    """An identity to keep a header by (Listing uses SOPInstanceUID and length; any tuple does)."""
    return (f"1.2.3.{n}", 1000 + n, 0xABCD0000 + n)


def test_a_head_is_found_by_its_exact_identity():
    kept = Directories()
    kept.keep_head(identity(1), b"head one")
    assert kept.head(identity(1)) == b"head one"
    uid, length, crc = identity(1)
    for other in [(uid, length + 1, crc), (uid, length, crc + 1), ("1.2.3.9", length, crc)]:
        assert kept.head(other) is None  # the same UID with other bytes is another instance


def test_the_heads_stay_within_their_budget_least_recently_used_out(monkeypatch):
    monkeypatch.setattr(media_directory, "HEADS_CACHE_BYTES", 300)
    kept = Directories()
    for n in range(3):
        kept.keep_head(identity(n), bytes([n]) * 100)
    assert kept._head_bytes == 300
    assert kept.head(identity(0)) == bytes(100)  # used: now the most recent
    kept.keep_head(identity(3), b"\x03" * 100)
    assert kept.head(identity(1)) is None  # the least recently used went
    assert [kept.head(identity(n)) is not None for n in (0, 2, 3)] == [True, True, True]
    assert kept._head_bytes == 300
    kept.keep_head(identity(4), b"\x04" * 250)  # room made for it, oldest first
    assert kept._head_bytes == sum(len(head) for head in kept._heads.values()) <= 300
    assert kept.head(identity(4)) is not None and kept.head(identity(0)) is None


def test_a_head_kept_twice_is_counted_once_and_a_head_over_budget_is_not_kept(monkeypatch):
    monkeypatch.setattr(media_directory, "HEADS_CACHE_BYTES", 300)
    kept = Directories()
    kept.keep_head(identity(1), b"x" * 100)
    kept.keep_head(identity(1), b"x" * 100)
    assert kept._head_bytes == 100
    kept.keep_head(identity(2), b"y" * 301)
    assert kept.head(identity(2)) is None and kept._head_bytes <= 300


def test_dicomdirs_are_kept_by_their_exact_instances_up_to_their_count(monkeypatch):
    monkeypatch.setattr(media_directory, "DICOMDIR_CACHE_SIZE", 2)
    kept = Directories()
    study = (("PT000000/ST000000/SE000000/IM000000", identity(1)), ("PT000000/ST000000/SE000000/IM000001",
                                                                     identity(2)))
    kept.keep_dicomdir(study, b"DICOMDIR of two")
    assert kept.dicomdir(study) == b"DICOMDIR of two"
    assert kept.dicomdir(study[:1]) is None  # one instance fewer: another DICOMDIR
    assert kept.dicomdir(study[::-1]) is None  # other File IDs for the same instances
    kept.keep_dicomdir(study[:1], b"one")
    assert kept.dicomdir(study) is not None  # used: the most recent
    kept.keep_dicomdir(study[1:], b"other one")
    assert kept.dicomdir(study[:1]) is None and kept.dicomdir(study) == b"DICOMDIR of two"
    assert len(kept._dicomdirs) == 2


def test_threads_sharing_the_heads_keep_the_count_right(monkeypatch):
    monkeypatch.setattr(media_directory, "HEADS_CACHE_BYTES", 50 * 64)
    kept = Directories()

    def work(offset: int):
        for n in range(2000):
            kept.keep_head(identity(offset + n % 200), b"h" * 64)
            kept.head(identity(offset + (n * 7) % 200))
    threads = [threading.Thread(target=work, args=(t * 100,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kept._head_bytes == 64 * len(kept._heads) <= 50 * 64


@pytest.mark.parametrize("bound", ["HEADS_CACHE_BYTES", "DICOMDIR_CACHE_SIZE"])
def test_a_bound_of_zero_keeps_nothing(bound, monkeypatch):
    monkeypatch.setattr(media_directory, bound, 0)
    kept = Directories()
    kept.keep_head(identity(1), b"h")
    kept.keep_dicomdir(((("IM", identity(1))),), b"d")
    assert (kept._heads if bound == "HEADS_CACHE_BYTES" else kept._dicomdirs) == {}
