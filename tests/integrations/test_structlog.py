"""The ``add_session_id`` processor in a real structlog chain."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.handlers

import pytest
import structlog
from structlog.testing import LogCapture

from sessionctx import session
from sessionctx.integrations.structlog import add_session_id


def json_logger(out: io.StringIO) -> structlog.BoundLogger:
    logger: structlog.BoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.contextvars.merge_contextvars,
            add_session_id,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.BoundLogger,
    )
    return logger


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def rendering_handler(out: io.StringIO) -> logging.Handler:
    """A standard library handler that renders records with structlog's
    ``ProcessorFormatter``, ``add_session_id`` in its chain, as JSON into ``out``."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[add_session_id],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(sort_keys=True),
            ],
        )
    )
    return handler


def test_rendered_events_carry_the_session_id() -> None:
    out = io.StringIO()
    log = json_logger(out)
    with session("sess-1"):
        log.info("inside", user="u1")
    log.warning("outside")
    assert lines(out) == [
        {"event": "inside", "level": "info", "session_id": "sess-1", "user": "u1"},
        {"event": "outside", "level": "warning"},
    ]


def test_an_explicit_session_id_is_kept() -> None:
    out = io.StringIO()
    log = json_logger(out).bind(session_id="bound")
    with session("sess-1"):
        log.info("bound")
        log.info("passed", session_id="passed")
    assert [line["session_id"] for line in lines(out)] == ["bound", "passed"]


@pytest.mark.anyio
async def test_concurrent_tasks_log_their_own_ids() -> None:
    out = io.StringIO()
    log = json_logger(out)

    async def work(sid: str) -> None:
        async with session(sid):
            await asyncio.sleep(0)
            log.info("step", task=sid)

    await asyncio.gather(*(work(f"sess-{i}") for i in range(4)))
    assert sorted((line["task"], line["session_id"]) for line in lines(out)) == [
        (f"sess-{i}", f"sess-{i}") for i in range(4)
    ]


def test_works_with_structlog_log_capture() -> None:
    captured = LogCapture()
    log = structlog.wrap_logger(None, processors=[add_session_id, captured])
    with session("sess-1"):
        log.info("hello")
    assert captured.entries == [{"event": "hello", "log_level": "info", "session_id": "sess-1"}]


@pytest.mark.parametrize("how", ["exception", "exc_info-true", "tuple", "handled-only"])
def test_an_exception_that_left_a_session_carries_its_id_outside(how: str) -> None:
    out = io.StringIO()
    log = json_logger(out)
    try:
        with session("sess-1"):
            raise ValueError("boom")
    except ValueError as error:
        if how == "exception":
            log.error("failed", exc_info=error)
        elif how == "exc_info-true":
            log.error("failed", exc_info=True)
        elif how == "tuple":
            log.error("failed", exc_info=(ValueError, error, error.__traceback__))
        else:
            log.error("failed")
    log.error("later")

    assert [line.get("session_id") for line in lines(out)] == ["sess-1", None]


@pytest.mark.parametrize(
    "logged_as",
    [
        # A server's own record (uvicorn's "Exception in ASGI application").
        pytest.param("exc_info", id="exc-info"),
        # werkzeug's "Error on request" has the traceback in its message,
        # logged while the exception is handled.
        pytest.param("text", id="text-while-handled"),
    ],
)
def test_a_standard_library_record_through_processor_formatter_gets_the_escaped_id(
    logger: logging.Logger, logged_as: str
) -> None:
    # Rendered by structlog for the standard library's handlers.
    out = io.StringIO()
    handler = rendering_handler(out)
    logger.addHandler(handler)
    try:
        with session("sess-1"):
            raise ValueError("boom")
    except ValueError as error:
        if logged_as == "exc_info":
            logger.error("Exception in ASGI application", exc_info=error)
        else:
            logger.error("Error on request: Traceback ...")
    logger.error("later")

    assert [line.get("session_id") for line in lines(out)] == ["sess-1", None]


def test_a_standard_library_record_held_back_gets_no_id_of_a_later_session(
    logger: logging.Logger,
) -> None:
    out = io.StringIO()
    handler = rendering_handler(out)
    memory = logging.handlers.MemoryHandler(capacity=2, flushLevel=logging.CRITICAL, target=handler)
    logger.addHandler(memory)
    with session("user-a"):
        logger.info("user a's line")
    with session("user-b"):
        # Fills the buffer: both records are rendered in this call.
        logger.info("user b's line")

    assert [(line.get("session_id"), line["event"]) for line in lines(out)] == [
        (None, "user a's line"),
        ("user-b", "user b's line"),
    ]
