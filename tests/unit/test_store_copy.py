"""Copying a store (fast, in-process): every generation's vectors move, a half-built one as far
as it got, the records follow, and a verification catches a target that differs."""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pytest
import structlog

from ragvisor.application.store_copy import copy_store, verify_copy
from ragvisor.core.model import Generation, Generations
from ragvisor.errors import StoreError
from ragvisor.store.sqlite import SqliteStore
from ragvisor.testing import FakeEmbedder, MemoryStore
from tests.helpers import commit_paragraphs, make_document

OLD, NEW = FakeEmbedder(name="old"), FakeEmbedder(name="new", dimensions=16)
LOG = structlog.get_logger(component="store")


def source_mid_migration() -> MemoryStore:
    """Three documents with the old model; the new model has reached only the first."""
    store = MemoryStore()
    docs = [make_document(f"d{i}.md", f"alpha {i}\n\nbeta {i}") for i in range(3)]
    for doc in docs:
        commit_paragraphs(store, doc, OLD)
    commit_paragraphs(store, docs[0], NEW)
    store.set_generations(
        Generations(
            active=Generation(OLD.fingerprint.key, "old", 32, {"name": "old"}),
            building=Generation(NEW.fingerprint.key, "new", 16, {"name": "new"}),
        )
    )
    return store


def test_a_copy_mid_migration_keeps_both_generations_as_far_as_they_got(tmp_path):
    """1. Every document and the old generation's vectors are copied, and the new generation's
    as far as it got; 2. the generation records follow, so the target resumes the migration;
    3. the verification counts and compares them."""
    source = source_mid_migration()
    target = SqliteStore(tmp_path / "data")
    report = copy_store(source, target, log=LOG, rng=random.Random(1))
    assert report.documents_copied == 3
    assert report.fingerprints == [OLD.fingerprint.key, NEW.fingerprint.key]
    assert len(target.hashes_with_vectors(OLD.fingerprint)) == 6
    assert len(target.hashes_with_vectors(NEW.fingerprint)) == 2
    assert target.generations() == source.generations()
    assert report.verified["vectors"] == {OLD.fingerprint.key: 6, NEW.fingerprint.key: 2}


def test_verification_fails_on_a_differing_vector(tmp_path):
    """A target whose stored vector of one text differs from the source's fails verification,
    naming the text hash and the fingerprint."""
    source = source_mid_migration()
    target = SqliteStore(tmp_path / "data")
    copy_store(source, target, log=LOG)
    changed = np.zeros(32, dtype="<f4")
    changed[0] = 1.0
    with sqlite3.connect(target.path) as conn:
        conn.execute(
            "UPDATE vectors SET vector = ?1 WHERE fingerprint = ?2 AND text_sha256 = "
            "(SELECT min(text_sha256) FROM vectors WHERE fingerprint = ?2)",
            (changed.tobytes(), OLD.fingerprint.key),
        )
    with pytest.raises(StoreError, match=f"under {OLD.fingerprint.key} differs in the target"):
        verify_copy(source, target, [OLD.fingerprint], random.Random(0))
