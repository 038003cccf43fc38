"""One question answered in this process, for `ragvisor ask` without `--url`: the local store,
the embedded worker started for it (or Ollama), the same answerer and deadline as the daemon's
`/ask`, and everything closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ragvisor.application.answerer import AskTrace
from ragvisor.errors import BackendTimeout, ConfigError
from ragvisor.runtime.services import Services


async def ask_once(services: Services, question: str, k: int | None) -> AsyncIterator[Any]:
    """The answer's events, as `/ask` streams them; the services are closed when it ends.

    Raises ConfigError when `generator.backend` is "none", BackendTimeout when the whole answer
    takes longer than `generator.deadlines.request_s`.
    """
    settings = services.settings
    try:
        if services.worker is not None:
            services.worker.wait_ready()
        if services.answerer is None:
            raise ConfigError('generator.backend is "none": there is nothing to answer with')
        k = k if k is not None else settings.ask.default_k
        trace = AskTrace()
        limit_s = settings.generator.deadlines.request_s
        deadline = asyncio.get_running_loop().time() + limit_s
        try:
            async with asyncio.timeout_at(deadline):
                prepared = await services.answerer.prepare(question, k, trace)
            events = services.answerer.events(prepared, trace)
            while True:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events, None)
                if event is None:
                    break
                yield event
        except TimeoutError as exc:
            raise BackendTimeout(
                f"no answer within generator.deadlines.request_s ({limit_s:g} s)"
            ) from exc
    finally:
        if services.generator is not None:
            await services.generator.aclose()
        services.close()
