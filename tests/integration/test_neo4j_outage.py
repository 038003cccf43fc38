"""Neo4j stopped and started again under a running daemon: searches under load are answered or
refused with Retry-After in time, never failed, and come back by
themselves; a sync cut short by Neo4j dying fails cleanly and the next one completes a
consistent graph."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import neo4j
import pytest

from tests.consistency import check_neo4j_store
from tests.infra.engine_steps import free_port
from tests.infra.neo4j_engine import USER, Engine
from tests.integration.conftest import QUIET, start_daemon, stop_daemon, synced_daemon
from tests.integration.corpus import synthetic_corpus

# A short request deadline keeps the outage short; every answer must come within it + 1 s.
REQUEST_S = 5.0
MODES = ("dense", "keyword", "hybrid")
QUERIES = ("swappiness", "neo4j heap size", "sourdough bread", "cat on the windowsill")
CLIENTS_PER_MODE = 2
# Longer than the request deadline + 1 s: a search held for the whole freeze is caught.
FREEZE_S = 8.0


def kill_9(engine: Engine) -> None:
    """Neo4j dies at once (SIGKILL): no clean shutdown, its connections reset."""
    assert engine.process is not None
    engine.process.kill()
    engine.process.wait(10)


@pytest.fixture(scope="module")
def own_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A Neo4j of this module's own, on a port of its own, which its tests stop and start."""
    engine = Engine.in_folder(tmp_path_factory.mktemp("outage-neo4j"), free_port())
    yield engine.start()
    if engine.process is not None and engine.process.poll() is None:
        kill_9(engine)  # its data is thrown away: a clean shutdown would only cost ~11 s


def running_and_empty(engine: Engine) -> Engine:
    """The engine, started again if a failed test left it stopped, and emptied."""
    if engine.process is None or engine.process.poll() is not None:
        engine.start()
    engine.wipe()
    return engine


@pytest.fixture
def engine(own_engine: Engine) -> Engine:
    """The module's Neo4j, running and empty."""
    return running_and_empty(own_engine)


@dataclass(frozen=True)
class Answer:
    """One /search as a client saw it."""

    mode: str
    started: float  # time.monotonic()
    seconds: float
    status: int  # 0: no HTTP answer at all
    retry_after: str | None
    code: str | None


def hammer(url: str, mode: str, stop: threading.Event, answers: list[Answer]) -> None:
    """Search in `mode`, one request after another, until `stop`; record every answer."""
    with httpx.Client(base_url=url, timeout=REQUEST_S + 30) as client:
        n = 0
        while not stop.is_set():
            query = QUERIES[n % len(QUERIES)]
            n += 1
            started = time.monotonic()
            try:
                response = client.get("/search", params={"q": query, "k": 3, "mode": mode})
            except httpx.HTTPError as exc:
                answers.append(
                    Answer(mode, started, time.monotonic() - started, 0, None, repr(exc))
                )
                continue
            code = response.json().get("code") if response.status_code != 200 else None
            answers.append(
                Answer(
                    mode,
                    started,
                    time.monotonic() - started,
                    response.status_code,
                    response.headers.get("retry-after"),
                    code,
                )
            )


@contextlib.contextmanager
def searching(url: str, clients_per_mode: int) -> Iterator[list[Answer]]:
    """Clients searching without pause in every mode while the block runs; every answer,
    appended as it comes (the clients finish their last search on leaving the block)."""
    stop = threading.Event()
    answers: list[Answer] = []
    clients = [
        threading.Thread(target=hammer, args=(url, mode, stop, answers), daemon=True)
        for mode in MODES
        for _ in range(clients_per_mode)
    ]
    for client in clients:
        client.start()
    try:
        yield answers
    finally:
        stop.set()
        for client in clients:
            client.join(REQUEST_S + 35)


def store_counts(url: str) -> dict[str, int]:
    """Documents and chunks as /status reports them."""
    store = httpx.get(f"{url}/status", timeout=30).json()["store"]
    assert store["ok"], store
    return {"documents": store["documents"], "chunks": store["chunks"]}


@dataclass(frozen=True)
class Outage:
    """What one daemon went through while its Neo4j stopped and started again under load."""

    answers: list[Answer]
    went_down: float  # time.monotonic() when Neo4j was told to stop
    came_back: float  # ... and when it answered again
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    searches_after: dict[str, httpx.Response]  # one per mode, once the load stopped
    daemon_survived: bool
    logs: str


@pytest.fixture(scope="module")
def outage(own_engine: Engine, tmp_path_factory: pytest.TempPathFactory, model_dir) -> Outage:
    """1. The notes corpus synced into the module's Neo4j and a daemon serving it with a 5 s
    request deadline; 2. two clients per mode search without pause for 2 s, through a clean stop
    of Neo4j (~11 s), 2 s more of outage, its start on the same folder and port (~15 s), and
    10 s more; 3. then one search per mode, /status, and the daemon stopped."""
    engine = running_and_empty(own_engine)
    base = tmp_path_factory.mktemp("outage")
    daemon = synced_daemon(
        base,
        model_dir,
        store_env=engine.daemon_env(),
        RAGVISOR_EMBEDDER__DEADLINES__REQUEST_S=str(REQUEST_S),
    )
    try:
        counts_before = store_counts(daemon.url)
        with searching(daemon.url, CLIENTS_PER_MODE) as answers:
            time.sleep(2)  # the load runs against a healthy store first
            went_down = time.monotonic()
            engine.stop()  # a clean shutdown: ~11 s, Bolt refusing from early on
            time.sleep(2)
            engine.start()
            came_back = time.monotonic()
            time.sleep(10)
        searches_after = {
            mode: httpx.get(
                f"{daemon.url}/search", params={"q": "swappiness", "mode": mode}, timeout=30
            )
            for mode in MODES
        }
        counts_after = store_counts(daemon.url)
        survived = daemon.process.poll() is None
    finally:
        stop_daemon(daemon)
    return Outage(
        list(answers),
        went_down,
        came_back,
        counts_before,
        counts_after,
        searches_after,
        survived,
        daemon.logs(),
    )


def test_searches_through_a_neo4j_restart_are_answered_or_refused_with_retry_after(
    outage: Outage,
):
    """Every search while Neo4j stops, is away and starts again (see the `outage` fixture) is
    answered 200, or refused 503 `store_unavailable` or `overloaded` with a Retry-After of at
    least a second — never a 500, never a dropped connection — and the outage was met."""
    failed = [a for a in outage.answers if a.status not in (200, 503)]
    assert not failed, f"answers neither 200 nor 503: {failed[:5]}"
    refused = [a for a in outage.answers if a.status == 503]
    assert any(outage.went_down <= a.started <= outage.came_back for a in refused), (
        "no search met the outage"
    )
    assert all(a.retry_after and int(a.retry_after) >= 1 for a in refused), refused[:5]
    assert {a.code for a in refused} <= {"store_unavailable", "overloaded"}, refused[:5]
    assert "Traceback" not in outage.logs


def test_searches_come_back_after_a_neo4j_restart_with_nothing_lost(outage: Outage):
    """After Neo4j is started again, the same daemon process answers 200 in every mode (the
    last search of each mode under load, and one more after it) without a restart, and /status
    counts the documents and chunks it counted before the outage."""
    for mode in MODES:
        last = [a for a in outage.answers if a.mode == mode][-1]
        assert last.status == 200, f"{mode} still refused 10 s after the restart: {last}"
        again = outage.searches_after[mode]
        assert again.status_code == 200, again.text
        assert again.json()["results"][0]["path"] == "ops/swap.md"
    assert outage.daemon_survived
    assert outage.counts_before["documents"] == 4
    assert outage.counts_after == outage.counts_before


def test_no_search_outlives_its_deadline_while_neo4j_restarts(outage: Outage):
    """No search while Neo4j stops, is away and starts again takes longer than its deadline
    (`embedder.deadlines.request_s`, 5 s here) plus 1 s."""
    slow = sorted(
        (a for a in outage.answers if a.seconds > REQUEST_S + 1), key=lambda a: -a.seconds
    )
    assert not slow, (
        f"{len(slow)} of {len(outage.answers)} answers outlived the deadline + 1 s "
        f"(the slowest {slow[0].seconds:.1f} s): {slow[:3]}"
    )


def test_no_search_outlives_its_deadline_while_neo4j_is_frozen(engine: Engine, tmp_path, model_dir):
    """1. A daemon on a synced Neo4j, request deadline 5 s, one client per mode searching;
    2. Neo4j freezes (SIGSTOP, as in a long GC pause or a stalled VM) for FREEZE_S, then thaws;
    3. no search takes longer than its deadline + 1 s: the ones caught by the freeze are
    answered 503 in time instead of waiting for Neo4j."""
    daemon = synced_daemon(
        tmp_path,
        model_dir,
        store_env=engine.daemon_env(),
        RAGVISOR_EMBEDDER__DEADLINES__REQUEST_S=str(REQUEST_S),
    )
    assert engine.process is not None
    try:
        with searching(daemon.url, clients_per_mode=1) as answers:
            time.sleep(1)
            os.kill(engine.process.pid, signal.SIGSTOP)
            try:
                time.sleep(FREEZE_S)
            finally:
                os.kill(engine.process.pid, signal.SIGCONT)
            time.sleep(2)
    finally:
        stop_daemon(daemon)
    slow = sorted((a for a in answers if a.seconds > REQUEST_S + 1), key=lambda a: -a.seconds)
    assert not slow, (
        f"{len(slow)} of {len(answers)} answers outlived the deadline + 1 s "
        f"(the slowest {slow[0].seconds:.1f} s): {slow[:3]}"
    )


def test_a_sync_cut_short_by_neo4j_dying_fails_cleanly_and_the_next_completes(
    engine: Engine, tmp_path, model_dir, embedder
):
    """1. A daemon on an empty Neo4j runs `POST /admin/sync?wait=true` over 24 documents;
    2. Neo4j is killed (-9) after the first commits: the request answers 503
    `store_unavailable` with Retry-After within a few query timeouts, and /status records the
    sync as failed; 3. Neo4j started again holds the documents committed before, consistent;
    4. the next admin sync completes the graph: every chunk of every file, consistent."""
    # 1. 24 documents of 4 sections: a sync of ~6 s that commits 8 documents at a time, long
    #    enough to be cut short.
    documents = 24
    corpus = synthetic_corpus(tmp_path / "corpus", documents=documents)
    query_timeout_s = 5.0
    daemon = start_daemon(
        corpus,
        tmp_path / "data",
        model_dir,
        tmp_path / "daemon.log",
        **{**QUIET, **engine.daemon_env(), "RAGVISOR_STORE__QUERY_TIMEOUT_S": str(query_timeout_s)},
    )
    admin = {"Authorization": f"Bearer {daemon.token}"}
    fingerprint = embedder.fingerprint.key
    try:
        with neo4j.GraphDatabase.driver(engine.uri, auth=(USER, engine.password)) as driver:
            outcome: dict[str, httpx.Response] = {}

            def sync() -> None:
                outcome["response"] = httpx.post(
                    f"{daemon.url}/admin/sync", params={"wait": "true"}, headers=admin, timeout=120
                )

            running = threading.Thread(target=sync, daemon=True)
            running.start()
            # 2. Kill Neo4j once some documents are committed, while the sync is still going.
            committed = 0
            deadline = time.monotonic() + 60
            while committed < 1 and time.monotonic() < deadline and running.is_alive():
                records = driver.execute_query("MATCH (d:Document) RETURN count(d) AS n").records
                committed = int(records[0]["n"])
                time.sleep(0.02)
            assert running.is_alive(), f"the sync ended before Neo4j died: {outcome}"
            kill_9(engine)
            died = time.monotonic()
            running.join(90)
            assert not running.is_alive(), "the sync did not end after Neo4j died"
            ended_s = time.monotonic() - died
            response = outcome["response"]
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "store_unavailable"
            assert int(response.headers["retry-after"]) >= 1
            # The failed commit, then giving up the lease: each bounded by the query timeout.
            assert ended_s < 4 * query_timeout_s, f"the failed sync took {ended_s:.1f} s more"
            # 3. Neo4j back: what was committed is still there, consistent; /status says the
            #    sync failed and why.
            engine.start()
            survived = check_neo4j_store(driver, fingerprint)
            assert committed <= survived["documents"] < documents, (committed, survived)
            sync_state = httpx.get(f"{daemon.url}/status", timeout=30).json()["sync"]
            assert sync_state["consecutive_failures"] == 1, sync_state
            assert sync_state["running"] is False
            assert "Neo4j" in sync_state["last_error"], sync_state
            # 4. The next sync completes the graph, embedding only what was missing.
            finished = httpx.post(
                f"{daemon.url}/admin/sync", params={"wait": "true"}, headers=admin, timeout=120
            )
            assert finished.status_code == 200, finished.text
            report = finished.json()["report"]
            assert report["documents"]["new"] == documents - survived["documents"], report
            assert report["documents"]["unchanged"] == survived["documents"], report
            counts = check_neo4j_store(driver, fingerprint)
            assert counts == {
                "documents": documents,
                "chunks": 4 * documents,
                "vectors": 4 * documents,
            }
            sync_state = httpx.get(f"{daemon.url}/status", timeout=30).json()["sync"]
            assert sync_state["consecutive_failures"] == 0, sync_state
    finally:
        stop_daemon(daemon)
    assert "Traceback" not in daemon.logs()
