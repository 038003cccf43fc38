"""The watch's filter drops what cannot matter to the corpus, and a document endpoint's own
write is not synced a second time."""

from __future__ import annotations

import pytest
import structlog

from ragvisor.config import parse_settings
from ragvisor.core.documents import CorpusSpec
from ragvisor.errors import ConfigError
from ragvisor.runtime.corpus_watch import CorpusWatch, wanted


def test_filter_keeps_documents_and_folders_and_drops_excluded_and_other_files(tmp_path):
    """Included files, folders and vanished suffix-less names pass; .git, swap files do not."""
    root = tmp_path.resolve()
    (root / "dir").mkdir()
    (root / ".a.md.swp").write_text("x")
    spec = CorpusSpec(roots=(root,))
    roots = (str(root),)
    assert wanted(f"{root}/a.md", roots, spec)
    assert wanted(f"{root}/dir", roots, spec)
    assert wanted(f"{root}/renamed-folder", roots, spec)  # gone: may have been a folder
    assert not wanted(f"{root}/.git/objects/ab", roots, spec)
    assert not wanted(f"{root}/.a.md.swp", roots, spec)
    assert not wanted(f"{root}/gone.py", roots, spec)
    assert not wanted("/elsewhere/a.md", roots, spec)


def test_a_settled_path_is_skipped_once_unless_it_changed_again(tmp_path):
    """note_settled hides the endpoint's own event; a later edit of the file is seen."""
    doc = tmp_path / "a.md"
    doc.write_text("one")
    watch = CorpusWatch(
        None,  # type: ignore[arg-type] - the runner is not used here
        CorpusSpec(roots=(tmp_path,)),
        debounce_s=0.3,
        max_wait_s=5,
        log=structlog.get_logger(),
    )
    watch.note_settled(str(doc))
    assert watch.unsettled({str(doc)}) == set()
    watch.note_settled(str(doc))
    doc.write_text("two, longer")
    assert watch.unsettled({str(doc)}) == {str(doc)}


def test_the_watch_settings_default_on_and_refuse_a_max_wait_below_the_debounce():
    """[sync] watch is on by default; watch_max_wait_s < watch_debounce_s names the key."""
    sync = parse_settings({}).sync
    assert (sync.watch, sync.watch_debounce_s, sync.watch_max_wait_s) == (True, 0.3, 5.0)
    with pytest.raises(ConfigError, match="watch_max_wait_s"):
        parse_settings({"sync": {"watch_debounce_s": 2.0, "watch_max_wait_s": 1.0}})
