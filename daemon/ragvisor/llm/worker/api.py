"""The worker's FastAPI app: the subset of Ollama's HTTP API the daemon uses, on llama.cpp.

Routes validate, pick the model, and hand over to the generator or the embedding service;
`create_worker_app` wires those from one `Settings`. Generation runs one request at a time
(Ollama's `OLLAMA_NUM_PARALLEL=1`); see `generation.py` and `slot.py` for how, and
`http.py` for errors and the request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from ragvisor import __version__
from ragvisor.asgi.request_log import RequestLog
from ragvisor.config import Settings
from ragvisor.embed.onnx import OnnxEmbedder
from ragvisor.errors import NotReadyError
from ragvisor.llm.worker import inventory, responses
from ragvisor.llm.worker.catalog import ModelKind, UnsupportedError
from ragvisor.llm.worker.generation import (
    Event,
    Failed,
    Finished,
    GenerationJob,
    GenerationSpec,
    Piece,
)
from ragvisor.llm.worker.http import (
    CLIENT_CLOSED,
    QUIET_PATHS,
    error_message,
    error_response,
    install_error_handlers,
    note,
    parse_body,
    unless_disconnected,
)
from ragvisor.llm.worker.prompting import render_chat, render_generate
from ragvisor.llm.worker.responses import Shape
from ragvisor.llm.worker.runtime import Worker
from ragvisor.llm.worker.schemas import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    ShowRequest,
    TokenCountRequest,
)

NDJSON = "application/x-ndjson"


def _ndjson(body: dict[str, Any]) -> bytes:
    # Compact, one object per line, as Go's encoder writes them.
    return (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _note_finished(request: Request, finished: Finished) -> None:
    stats = finished.stats
    seconds = stats.eval_duration_ns / 1e9 if stats.eval_duration_ns else 0.0
    note(
        request,
        prompt_eval_count=stats.prompt_eval_count,
        eval_count=stats.eval_count,
        tokens_per_s=round(stats.eval_count / seconds, 1) if stats.eval_count and seconds else None,
        done_reason=stats.done_reason,
        cancelled=stats.cancelled,
    )


async def _collect(job: GenerationJob) -> tuple[str, Finished | Failed]:
    parts: list[str] = []
    async for event in job.stream():
        if isinstance(event, Piece):
            parts.append(event.text)
        else:
            return "".join(parts), event
    raise AssertionError("unreachable: a job always ends with Finished or Failed")


async def _respond(job: GenerationJob, request: Request, *, shape: Shape, stream: bool) -> Response:
    """Turn a job's events into Ollama's answer: NDJSON lines, or one object at the end."""
    model = job.spec.name
    if not stream:
        present, outcome = await unless_disconnected(request, _collect(job))
        if not present or outcome is None:
            job.cancel.set()
            note(request, status=CLIENT_CLOSED)
            return Response(status_code=CLIENT_CLOSED)
        text, end = outcome
        if isinstance(end, Failed):
            return error_response(end.error)
        _note_finished(request, end)
        return JSONResponse(responses.final(shape, model, text, end))

    # Wait for the first event before answering, so that a failed load is an HTTP error.
    present, first = await unless_disconnected(request, job.events.get())
    if not present or first is None:
        job.cancel.set()
        note(request, status=CLIENT_CLOSED)
        return Response(status_code=CLIENT_CLOSED)
    if isinstance(first, Failed):
        return error_response(first.error)

    async def lines() -> AsyncIterator[bytes]:
        event: Event = first
        try:
            while True:
                if isinstance(event, Piece):
                    yield _ndjson(responses.piece(shape, model, event.text))
                elif isinstance(event, Finished):
                    _note_finished(request, event)
                    yield _ndjson(responses.final(shape, model, "", event))
                    return
                else:
                    note(request, error=error_message(event.error))
                    yield _ndjson({"error": error_message(event.error)})
                    return
                event = await job.events.get()
        finally:
            job.cancel.set()  # the client left mid-stream (or we are done: then a no-op)

    return StreamingResponse(lines(), media_type=NDJSON, background=BackgroundTask(job.cancel.set))


def create_worker_app(
    settings: Settings,
    *,
    model_path: Path,
    build_embedder: Callable[[], OnnxEmbedder],
    log: Any | None = None,
) -> FastAPI:
    """The worker's app for the GGUF at `model_path` and the embedder `build_embedder` makes.

    Nothing is loaded here: each model loads on its first use (or an explicit preload) and
    unloads when its keep-alive expires. `app.state.worker` is the `Worker` behind the routes.
    """
    log = log or structlog.get_logger(component="worker")
    worker = Worker(settings, model_path=model_path, build_embedder=build_embedder, log=log)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The digest (/api/tags, /api/ps) hashes 250 MB once: start now, in the background,
        # so the first /api/ps need not wait for it. Reading the file is not loading the model.
        hashing = asyncio.create_task(asyncio.to_thread(inventory.digest_of, model_path))
        # An unreadable file is reported by the request that needs the digest, not here.
        hashing.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            yield
        finally:
            if not hashing.done():
                hashing.cancel()
            log.info("worker.stopping")
            await worker.close()

    app = FastAPI(
        title="ragvisor worker",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.worker = worker
    install_error_handlers(app, log)
    _add_generation_routes(app, worker)
    _add_model_routes(app, worker)
    app.add_middleware(
        RequestLog,
        log=log,
        event="worker.request",
        path_field="endpoint",
        duration_digits=1,
        quiet_paths=QUIET_PATHS,
    )
    return app


def _add_generation_routes(app: FastAPI, worker: Worker) -> None:
    @app.post("/api/chat")
    async def chat(request: Request) -> Response:
        body = await parse_body(request, ChatRequest)
        note(request, model=body.model)
        if worker.kind(body.model) is not ModelKind.GENERATOR:
            raise UnsupportedError(f'"{body.model}" does not support chat')
        keep_alive_s = worker.keep_alive(body.keep_alive)
        if not body.messages:
            return JSONResponse(await _lifecycle(worker, Shape.CHAT, body, keep_alive_s))
        spec = GenerationSpec(
            name=body.model,
            prompt=render_chat([(m.role, m.content) for m in body.messages]),
            options=body.options,
            num_ctx=await worker.num_ctx(body.options),
            keep_alive_s=keep_alive_s,
            strip_leading_space=True,
        )
        job = worker.generator.start(spec)
        return await _respond(job, request, shape=Shape.CHAT, stream=body.stream)

    @app.post("/api/generate")
    async def generate(request: Request) -> Response:
        body = await parse_body(request, GenerateRequest)
        note(request, model=body.model)
        if worker.kind(body.model) is not ModelKind.GENERATOR:
            raise UnsupportedError(f'"{body.model}" does not support generate')
        keep_alive_s = worker.keep_alive(body.keep_alive)
        if not body.prompt:
            return JSONResponse(await _lifecycle(worker, Shape.GENERATE, body, keep_alive_s))
        spec = GenerationSpec(
            name=body.model,
            prompt=render_generate(body.prompt, body.system, raw=body.raw),
            options=body.options,
            num_ctx=await worker.num_ctx(body.options),
            keep_alive_s=keep_alive_s,
            strip_leading_space=False,
        )
        job = worker.generator.start(spec)
        return await _respond(job, request, shape=Shape.GENERATE, stream=body.stream)

    @app.post("/api/embed")
    async def embed(request: Request) -> JSONResponse:
        body = await parse_body(request, EmbedRequest)
        note(request, model=body.model)
        if worker.kind(body.model) is not ModelKind.EMBEDDER:
            raise UnsupportedError(f'"{body.model}" does not support embeddings')
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        texts = [text for text in texts if text] if isinstance(body.input, str) else texts
        keep_alive_s = worker.keep_alive(body.keep_alive)
        started = asyncio.get_running_loop().time()
        if not texts:
            # Ollama's load/unload form: the model and no vectors, without statistics.
            if keep_alive_s == 0:
                await worker.embeddings.slot.unload(reason="request")
            else:
                await worker.embeddings.embed(
                    [], name=body.model, keep_alive_s=keep_alive_s, truncate=True, dimensions=None
                )
            return JSONResponse({"model": body.model, "embeddings": []})
        result = await worker.embeddings.embed(
            texts,
            name=body.model,
            keep_alive_s=keep_alive_s,
            truncate=body.truncate,
            dimensions=body.dimensions,
        )
        note(request, prompt_eval_count=result.prompt_eval_count, inputs=len(texts))
        return JSONResponse(
            {
                "model": body.model,
                "embeddings": result.embeddings,
                "total_duration": int((asyncio.get_running_loop().time() - started) * 1e9),
                "load_duration": result.load_duration_ns,
                "prompt_eval_count": result.prompt_eval_count,
            }
        )

    @app.post("/api/ragvisor/token_count")
    async def token_count(request: Request) -> JSONResponse:
        body = await parse_body(request, TokenCountRequest)
        note(request, model=body.model, texts=len(body.texts))
        if worker.kind(body.model) is ModelKind.EMBEDDER:
            counts = await worker.embeddings.count_tokens(
                body.texts, name=body.model, keep_alive_s=worker.default_keep_alive_s
            )
        else:
            counts = await _count_generator_tokens(worker, body.model, body.texts)
        return JSONResponse({"model": body.model, "counts": counts})


async def _lifecycle(
    worker: Worker, shape: Shape, body: ChatRequest | GenerateRequest, keep_alive_s: float
) -> dict[str, Any]:
    """Ollama's empty request: load the model, or with keep_alive 0 unload it."""
    if keep_alive_s == 0:
        await worker.slot.unload(reason="request")
        return responses.lifecycle(shape, body.model, "unload")
    await worker.generator.preload(
        name=body.model, num_ctx=await worker.num_ctx(body.options), keep_alive_s=keep_alive_s
    )
    return responses.lifecycle(shape, body.model, "load")


async def _count_generator_tokens(worker: Worker, model: str, texts: list[str]) -> list[int]:
    """Token counts with the generator's tokenizer (no BOS), loading the model if needed.

    Tokenizing only reads the vocabulary, so it does not wait for a running generation; it
    uses the loaded context size, so counting never forces a reload.
    """
    for _attempt in range(2):
        if worker.slot.loaded() is None:
            await worker.generator.preload(
                name=model,
                num_ctx=worker.engine.loaded_n_ctx or worker.default_num_ctx,
                keep_alive_s=worker.default_keep_alive_s,
            )
        try:
            return await asyncio.to_thread(
                lambda: [len(worker.engine.tokenize(text, add_bos=False)) for text in texts]
            )
        except NotReadyError:  # unloaded (keep-alive expired) between the check and now
            continue
    raise NotReadyError("the generator model keeps unloading; try again")


def _add_model_routes(app: FastAPI, worker: Worker) -> None:
    @app.api_route("/", methods=["GET", "HEAD"])
    async def root() -> PlainTextResponse:
        return PlainTextResponse("Ollama is running")

    @app.api_route("/api/version", methods=["GET", "HEAD"])
    async def version() -> JSONResponse:
        return JSONResponse({"version": __version__})

    @app.get("/api/tags")
    async def tags() -> JSONResponse:
        return JSONResponse({"models": await asyncio.to_thread(inventory.tags, worker)})

    @app.get("/api/ps")
    async def ps() -> JSONResponse:
        return JSONResponse({"models": await asyncio.to_thread(inventory.loaded_models, worker)})

    @app.post("/api/show")
    async def show(request: Request) -> JSONResponse:
        body = await parse_body(request, ShowRequest)
        name = body.model or body.name
        note(request, model=name)
        kind = worker.kind(name)
        return JSONResponse(await asyncio.to_thread(inventory.show, worker, kind, name))
