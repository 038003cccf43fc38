"""The real Neo4j engine the Neo4j store is proven against: built from Maven Central artifacts,
reached with the official driver over Bolt, with the indexes the store relies on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import neo4j
import pytest
from neo4j.exceptions import AuthError

from tests.infra.neo4j_engine import NEO4J_VERSION, USER, Engine


@pytest.fixture
def engine(neo4j_engine: Engine) -> Engine:
    """The run's real Neo4j (tests/conftest.py)."""
    return neo4j_engine


@pytest.fixture
def driver(engine: Engine) -> Iterator[neo4j.Driver]:
    """A driver with the engine's generated password."""
    with neo4j.GraphDatabase.driver(engine.uri, auth=(USER, engine.password)) as d:
        yield d


def test_the_engine_is_the_pinned_community_release(driver: neo4j.Driver):
    """The driver reaches Neo4j's own kernel, at the pinned LTS version."""
    records, _, _ = driver.execute_query(
        "CALL dbms.components() YIELD name, versions, edition RETURN name, versions, edition"
    )
    assert records[0]["name"] == "Neo4j Kernel"
    assert records[0]["versions"] == [NEO4J_VERSION]
    assert records[0]["edition"] == "community"


def test_auth_is_on_and_only_the_generated_password_opens_it(engine: Engine):
    """Neither the default neo4j/neo4j nor a wrong password gets in."""
    for password in ("neo4j", "wrong"):
        with (
            neo4j.GraphDatabase.driver(engine.uri, auth=(USER, password)) as d,
            pytest.raises(AuthError),
        ):
            d.verify_connectivity()


def test_vector_and_full_text_indexes_answer(driver: neo4j.Driver):
    """A cosine vector index and a full-text index come ONLINE and rank what was written."""
    driver.execute_query(
        "CREATE VECTOR INDEX probe_vectors IF NOT EXISTS FOR (c:Probe) ON c.embedding "
        "OPTIONS {indexConfig: {`vector.dimensions`: 3, `vector.similarity_function`: 'cosine'}}"
    )
    driver.execute_query(
        "CREATE FULLTEXT INDEX probe_text IF NOT EXISTS FOR (c:Probe) ON EACH [c.text]"
    )
    driver.execute_query("CALL db.awaitIndexes(60)")
    driver.execute_query(
        "UNWIND $rows AS row CREATE (c:Probe {id: row.id, text: row.text}) "
        "WITH c, row CALL db.create.setNodeVectorProperty(c, 'embedding', row.vector)",
        rows=[
            {"id": "swap", "text": "the swap file", "vector": [1.0, 0.0, 0.0]},
            {"id": "heap", "text": "the neo4j heap", "vector": [0.0, 1.0, 0.0]},
        ],
    )
    dense, _, _ = driver.execute_query(
        "CALL db.index.vector.queryNodes('probe_vectors', 1, $q) YIELD node RETURN node.id AS id",
        q=[0.9, 0.1, 0.0],
    )
    words, _, _ = driver.execute_query(
        "CALL db.index.fulltext.queryNodes('probe_text', 'heap') YIELD node RETURN node.id AS id"
    )
    assert [r["id"] for r in dense] == ["swap"]
    assert [r["id"] for r in words] == ["heap"]


def test_data_outlives_a_restart(engine: Engine, tmp_path: Path):
    """A clean stop and a new start on the same home keep what was committed."""
    with neo4j.GraphDatabase.driver(engine.uri, auth=(USER, engine.password)) as d:
        d.execute_query("MERGE (:Marker {name: 'kept'})")
    engine.stop()
    engine.start()
    with neo4j.GraphDatabase.driver(engine.uri, auth=(USER, engine.password)) as d:
        records, _, _ = d.execute_query("MATCH (m:Marker {name: 'kept'}) RETURN count(m) AS n")
    assert records[0]["n"] == 1
