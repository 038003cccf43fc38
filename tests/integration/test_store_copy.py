"""`ragvisor store copy`: from the embedded SQLite into the real Neo4j, without embedding again,
resumable, verified — so a user who started with `make run` moves to production as they are."""

from __future__ import annotations

import json

import neo4j

from tests.infra.neo4j_engine import USER, Engine
from tests.integration.conftest import run_cli
from tests.integration.corpus import write_corpus


def neo4j_config(engine: Engine, path, corpus, data_dir):
    """A configuration file whose store is the engine's database."""
    path.write_text(
        f'[corpus]\npaths = ["{corpus}"]\n'
        f'[store]\nbackend = "neo4j"\nuri = "{engine.uri}"\n'
        f'password_file = "{engine.password_file}"\ndata_dir = "{data_dir}"\n'
    )
    return path


def test_copy_sqlite_into_neo4j_then_sync_embeds_nothing(neo4j_engine: Engine, tmp_path, model_dir):
    """1. The notes synced into SQLite; 2. copied into an empty Neo4j: every document, chunk
    and vector, verified by counts and by sampled vectors; 3. copying again copies nothing;
    4. a copy cut short (two documents missing in Neo4j) resumes with just those two;
    5. a sync against Neo4j then embeds nothing and finds every document unchanged."""
    neo4j_engine.wipe()
    corpus = write_corpus(tmp_path / "notes")
    sqlite_dir = tmp_path / "sqlite"
    # 1. The embedded store, as `make run` leaves it.
    first = run_cli(
        ["sync", "--corpus", str(corpus), "--data-dir", str(sqlite_dir), "--json"], model_dir
    )
    assert first.returncode == 0, first.stderr
    embedded = json.loads(first.stdout)["embeddings_computed"]
    target = neo4j_config(neo4j_engine, tmp_path / "neo4j.toml", corpus, tmp_path / "n4data")
    copy = ["store", "copy", "--data-dir", str(sqlite_dir), "--to-config", str(target), "--json"]
    # 2. The copy, verified.
    result = run_cli(copy, model_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["documents_copied"] == 4
    assert report["vectors_copied"] == embedded
    assert report["verified"]["documents"] == 4
    assert list(report["verified"]["vectors"].values()) == [embedded]
    assert report["verified"]["vectors_compared"] == embedded
    # 3. Again: nothing to do.
    again = json.loads(run_cli(copy, model_dir).stdout)
    assert again["documents_copied"] == 0
    assert again["documents_already_there"] == 4
    # 4. As if the first copy had stopped two documents short.
    with neo4j.GraphDatabase.driver(neo4j_engine.uri, auth=(USER, neo4j_engine.password)) as d:
        d.execute_query(
            "MATCH (doc:Document) WITH doc ORDER BY doc.doc_id LIMIT 2 "
            "OPTIONAL MATCH (doc)-[:HAS_CHUNK]->(c) DETACH DELETE doc, c"
        )
    resumed = json.loads(run_cli(copy, model_dir).stdout)
    assert resumed["documents_copied"] == 2
    assert resumed["documents_already_there"] == 2
    # 5. Production takes over without embedding anything.
    sync = run_cli(["sync", "--config", str(target), "--json"], model_dir)
    assert sync.returncode == 0, sync.stderr
    moved = json.loads(sync.stdout)
    assert moved["embeddings_computed"] == 0
    assert moved["documents"]["unchanged"] == 4


def test_copy_refuses_a_foreign_target_and_the_store_itself(
    neo4j_engine: Engine, tmp_path, model_dir
):
    """A target holding documents the source does not have is not overwritten (exit 1,
    nothing written); a target that is the source itself is a usage error."""
    neo4j_engine.wipe()
    corpus = write_corpus(tmp_path / "notes")
    other = write_corpus(tmp_path / "other")
    (other / "foreign.md").write_text("# Foreign\n\nA document of another knowledge base.")
    target = neo4j_config(neo4j_engine, tmp_path / "neo4j.toml", other, tmp_path / "n4data")
    assert run_cli(["sync", "--config", str(target)], model_dir).returncode == 0
    sqlite_dir = tmp_path / "sqlite"
    assert (
        run_cli(["sync", "--corpus", str(corpus), "--data-dir", str(sqlite_dir)], model_dir)
    ).returncode == 0
    refused = run_cli(
        ["store", "copy", "--data-dir", str(sqlite_dir), "--to-config", str(target)], model_dir
    )
    assert refused.returncode == 1, refused.stderr
    assert "holds 5 document(s) the source does not" in refused.stderr
    assert "not a copy of this store" in refused.stderr
    assert "Received notification" not in refused.stderr  # the driver's chatter stays quiet
    itself = tmp_path / "itself.toml"
    itself.write_text(f'[store]\ndata_dir = "{sqlite_dir}"\n')
    same = run_cli(
        ["store", "copy", "--data-dir", str(sqlite_dir), "--to-config", str(itself)], model_dir
    )
    assert same.returncode == 2, same.stderr
    assert "names the store being copied" in same.stderr
