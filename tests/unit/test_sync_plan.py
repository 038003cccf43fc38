"""The pure sync planner: new / changed / unchanged / deleted, and why."""

from __future__ import annotations

from ragvisor.core.model import StoredDocument
from ragvisor.core.sync import Action, compare_chunks, plan_sync
from tests.helpers import CHUNKER, make_document, paragraph_chunks


def _stored(doc, chunker=CHUNKER):
    return StoredDocument(
        doc.doc_id,
        doc.corpus_root,
        doc.path,
        doc.content_sha256,
        chunker,
        tuple(c.text_sha256 for c in paragraph_chunks(doc)),
    )


def _plan(scanned, stored, have=None, **kwargs):
    if have is None:
        have = {h for s in stored for h in s.chunk_hashes}
    return plan_sync(
        scanned,
        {s.doc_id: s for s in stored},
        have,
        chunk=paragraph_chunks,
        chunker_version=kwargs.pop("chunker_version", CHUNKER),
        fingerprint_key="fp",
        **kwargs,
    )


def _actions(plan):
    return {p.path: p.action for p in plan.documents}


def test_add_modify_delete_and_unchanged_are_told_apart():
    """Each document gets exactly one action from comparing bytes with the store."""
    same = make_document("same.md", "one\n\ntwo")
    old = make_document("edit.md", "one\n\ntwo")
    edited = make_document("edit.md", "one\n\nTWO")
    gone = make_document("gone.md", "bye")
    added = make_document("new.md", "hello")
    plan = _plan([same, edited, added], [_stored(same), _stored(old), _stored(gone)])
    assert _actions(plan) == {
        "same.md": Action.UNCHANGED,
        "edit.md": Action.CHANGED,
        "new.md": Action.NEW,
        "gone.md": Action.DELETED,
    }
    assert plan.document_counts().as_dict() == {
        "new": 1,
        "changed": 1,
        "unchanged": 1,
        "deleted": 1,
    }
    changed = next(p for p in plan.documents if p.path == "edit.md")
    assert changed.reasons == ("content",)
    assert changed.chunk_counts.as_dict() == {"new": 0, "changed": 1, "unchanged": 1, "deleted": 0}


def test_rename_is_a_new_document_plus_a_deletion():
    """A renamed file plans as new under its new path and deleted under the old one."""
    before = make_document("old-name.md", "same text\n\nhere")
    after = make_document("new-name.md", "same text\n\nhere")
    plan = _plan([after], [_stored(before)])
    assert _actions(plan) == {"new-name.md": Action.NEW, "old-name.md": Action.DELETED}


def test_model_change_marks_unchanged_bytes_as_changed_for_the_model():
    """When stored vectors are missing under the active fingerprint the document is re-embedded."""
    doc = make_document("a.md", "one\n\ntwo")
    plan = _plan([doc], [_stored(doc)], have=set())
    assert plan.documents[0].action is Action.CHANGED
    assert plan.documents[0].reasons == ("model",)


def test_chunker_change_marks_document_changed():
    """A new chunker version re-chunks every document even when its bytes are the same."""
    doc = make_document("a.md", "one\n\ntwo")
    plan = _plan([doc], [_stored(doc, chunker="older")])
    assert plan.documents[0].reasons == ("chunker",)


def test_skipped_files_and_missing_roots_are_never_deleted():
    """Documents that could not be read now, or whose root is missing, are kept."""
    unreadable = make_document("locked.md", "secret")
    elsewhere = make_document("x.md", "far", root="/mnt/usb")
    plan = _plan(
        [],
        [_stored(unreadable), _stored(elsewhere)],
        keep_doc_ids={unreadable.doc_id},
        keep_roots={"/mnt/usb"},
    )
    assert plan.documents == []


def test_compare_chunks_counts_by_position():
    """Chunk counts compare hashes position by position."""
    assert compare_chunks(["a", "b", "c"], ["a", "x"]).as_dict() == {
        "new": 0,
        "changed": 1,
        "unchanged": 1,
        "deleted": 1,
    }
    assert compare_chunks([], ["a"]).new == 1


def test_a_document_the_chunker_fails_on_is_skipped_and_kept():
    """A chunker error on one document skips it with the reason; its stored version stays."""
    old = make_document("odd.md", "one")
    edited = make_document("odd.md", "one\n\nboom")
    fine = make_document("fine.md", "hello")

    def chunk(doc):
        if "boom" in doc.text:
            raise ValueError("boom at offset 5")
        return paragraph_chunks(doc)

    plan = plan_sync(
        [edited, fine],
        {old.doc_id: _stored(old)},
        set(_stored(old).chunk_hashes),
        chunk=chunk,
        chunker_version=CHUNKER,
        fingerprint_key="fp",
    )
    assert _actions(plan) == {"fine.md": Action.NEW}
    assert plan.skipped == [
        {"path": "/corpus/odd.md", "reason": "could not be chunked (ValueError: boom at offset 5)"}
    ]
