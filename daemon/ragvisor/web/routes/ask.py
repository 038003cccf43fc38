"""`POST /ask`: a cited answer, whole or streamed as NDJSON, within the request deadline and the
ask lane; extractive when the generator cannot answer in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ragvisor.application.answerer import FALLBACK_RESERVE_S, Answerer, AskTrace
from ragvisor.asgi.request_log import attach, request_id
from ragvisor.core.deadline import request_deadline
from ragvisor.errors import BackendTimeout, NotReadyError, Overloaded, RagvisorError
from ragvisor.runtime.services import Services
from ragvisor.supervise.admission import Ticket
from ragvisor.web.errors import error_body, status_for
from ragvisor.web.json_body import load_json
from ragvisor.web.openapi import (
    ask_request_body,
    ask_stream_content,
    error_responses,
)
from ragvisor.web.schemas import (
    AskRequest,
    AskResponse,
)
from ragvisor.web.streaming import ClientGone, NdjsonStream, until_disconnect

# Seconds kept for retrieval and packing when a request waits in the ask lane.
LANE_PREPARE_S = 1.0


# The answerer finishes by the deadline itself; the outer bound fires only this much later.
BACKSTOP_GRACE_S = 0.5


def add_ask_route(app: FastAPI, services: Services, log: Any) -> None:
    """`POST /ask`: retrieve, pack, generate; JSON or an NDJSON stream."""
    ask_settings = services.settings.ask

    @app.post(
        "/ask",
        summary="Answer a question from the knowledge base, citing the passages used",
        response_model=AskResponse,
        responses={
            200: {
                "description": "The answer as one object, or an NDJSON stream of events",
                "content": ask_stream_content(),
            },
            **error_responses(400, 413, 422, 502, 503, 504),
        },
        openapi_extra=ask_request_body(ask_settings.max_question_chars, ask_settings.max_k),
    )
    async def ask(request: Request) -> Response:
        body = await _ask_body(request, services.settings.server.max_json_depth)
        answerer = services.answerer
        if answerer is None:
            raise NotReadyError('/ask is off: generator.backend is "none"')
        guard = services.memory_guard
        if guard is not None and guard.ask_shed():
            raise Overloaded(
                f"/ask is shed while memory is critical ({guard.memory_short()})",
                retry_after_s=guard.shed_retry_after_s,
            )
        trace = AskTrace()
        attach(request.scope, trace.timings_ms, suffix="_ms")
        attach(request.scope, trace.fields)
        k = body.k if body.k is not None else services.settings.ask.default_k
        limit_s = services.settings.generator.deadlines.request_s
        deadline = time.monotonic() + limit_s
        ticket: Ticket | None = None
        try:
            # Full lane: Overloaded (503) at once. Waiting counts against the request deadline;
            # a wait that eats it all ends in an extractive answer, not a timeout.
            async with asyncio.timeout(max(0.0, limit_s - FALLBACK_RESERVE_S - LANE_PREPARE_S)):
                ticket = await until_disconnect(request, services.lanes["ask"].acquire())
            trace.timings_ms["queue"] = round(ticket.waited_s * 1000, 3)
        except TimeoutError:
            trace.fields["lane_timeout"] = True
        except ClientGone:
            trace.fields["client_gone"] = True
            return Response(status_code=499)
        release = ticket.release if ticket is not None else _nothing
        try:
            embed_limit_s = services.settings.embedder.deadlines.request_s
            ask = _Ask(request, answerer, trace, deadline, limit_s, log, embed_limit_s)
            response = await ask.respond(body.question, k, body.stream, release)
        except BaseException:
            release()
            raise
        return response


def _nothing() -> None:
    """No slot to release."""


@dataclass(slots=True)
class _Ask:
    """One `/ask` request between admission and the last byte of its answer."""

    request: Request
    answerer: Answerer
    trace: AskTrace
    deadline: float  # time.monotonic()
    limit_s: float
    log: Any
    embed_limit_s: float  # embedder.deadlines.request_s

    def _timeout(self) -> BackendTimeout:
        return BackendTimeout(
            f"/ask took longer than generator.deadlines.request_s ({self.limit_s:g} s)",
            phase="request",
        )

    def _gone(self) -> Response:
        self.trace.fields["client_gone"] = True
        self.log.info("ask.client_gone", request_id=request_id(self.request.scope))
        return Response(status_code=499)

    async def respond(
        self, question: str | None, k: int, stream: bool, release: Callable[[], None]
    ) -> Response:
        """Prepare, then answer as JSON or as an NDJSON stream; `release` frees the lane slot
        when the answer is complete (for a stream: after its last line)."""
        # Retrieval embeds the question: bounded like a search, and by this request.
        embed_until = min(self.deadline, time.monotonic() + self.embed_limit_s)
        try:
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                with request_deadline(embed_until):  # copied into the task and its thread
                    prepared = await until_disconnect(
                        self.request, self.answerer.prepare(question, k, self.trace)
                    )
        except TimeoutError as exc:
            raise self._timeout() from exc
        except ClientGone:
            release()
            return self._gone()
        if self.trace.fields.get("lane_timeout") and prepared.degraded is None:
            prepared = replace(prepared, degraded="the ask lane stayed busy until the deadline")
        if stream:
            events = _bounded(
                self.answerer.events(prepared, self.trace, until=self.deadline),
                self.deadline,
                self.limit_s,
            )

            def client_gone() -> None:
                self._gone()

            return NdjsonStream(
                _with_error_events(events, self.trace, self.log, on_end=release),
                on_client_gone=client_gone,
            )
        try:
            left = max(0.0, self.deadline - time.monotonic())
            async with asyncio.timeout(left + BACKSTOP_GRACE_S):
                result = await until_disconnect(
                    self.request,
                    self.answerer.answer(prepared, self.trace, until=self.deadline),
                )
        except TimeoutError as exc:
            raise self._timeout() from exc
        except ClientGone:
            return self._gone()
        finally:
            release()
        return JSONResponse(result)


async def _ask_body(request: Request, max_depth: int) -> AskRequest:
    """The JSON body, whatever Content-Type says: `curl -d '{"question": …}'` sends a form type.

    Raises RequestValidationError (422) for a body that is not JSON or not a valid request;
    InputError (400) for one nested deeper than `max_depth` or with a NUL or a lone surrogate in
    a string (ragvisor.web.json_body); BodyTooLarge (413) and BodyTimeout (408) from the body
    limits (ragvisor.web.limits); ClientDisconnect (logged 499) when the client leaves.
    """
    raw = await request.body()
    try:
        data = load_json(raw, max_depth)
    except ValueError as exc:  # UnicodeDecodeError included
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"body is not valid JSON: {exc}", "type": "json_invalid"}]
        ) from exc
    try:
        return AskRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc


async def _bounded(
    events: AsyncGenerator[dict[str, Any], None], deadline: float, limit_s: float
) -> AsyncGenerator[dict[str, Any], None]:
    """Pass events through until the request deadline (time.monotonic()), then raise
    BackendTimeout. A backstop: the answerer itself finishes, extractively if need be, before
    the deadline."""
    try:
        while True:
            try:
                async with asyncio.timeout(deadline - time.monotonic() + BACKSTOP_GRACE_S):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise BackendTimeout(
                    f"/ask took longer than generator.deadlines.request_s ({limit_s:g} s)",
                    phase="request",
                ) from exc
            yield event
    finally:
        await events.aclose()


async def _with_error_events(
    events: AsyncGenerator[dict[str, Any], None],
    trace: AskTrace,
    log: Any,
    on_end: Callable[[], None] = lambda: None,
) -> AsyncGenerator[dict[str, Any], None]:
    """After the first line the status is sent: a failure becomes a final `error` event.

    `on_end` runs when the stream ends, however it ends (the ask lane's slot is released).
    """
    try:
        async for event in events:
            yield event
    except RagvisorError as exc:
        status, code = status_for(exc)
        trace.fields.update(error=str(exc), error_code=code)
        log.warning("ask.failed_mid_stream", error=str(exc), code=code)
        yield {"type": "error", **error_body(str(exc), code), "status": status}
    finally:
        on_end()
        await events.aclose()
