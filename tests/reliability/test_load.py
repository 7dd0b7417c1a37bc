"""Cross-talk under load: real servers, many concurrent requests, each with its own id.

Every request carries a random id (or none, or an invalid one, or one in a
lower-priority header or in ``baggage``). The app reads the session id across
awaits, thread hops and child tasks, and logs through ``SessionIdFilter`` from
each of those places. Every response, every read and every log line must carry
the id of its own request: one crossed id is a privacy bug. On the ASGI
servers some requests are ``POST`` s with a body over 64 KiB, which the app
reads or leaves: uvicorn then pauses reading the connection, and the requests
after them on it must still start outside any session (the probe counts those
that do not).
"""

from __future__ import annotations

import importlib.util
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import pytest

from tests.reliability.applog import read_log_lines
from tests.reliability.figures import FIGURES, LoadRun
from tests.reliability.keepalive import KeepAliveConnection, Reply
from tests.reliability.oracle import echoed_session
from tests.reliability.servers import ASGI_FAULT_SERVERS, LOAD_SERVERS, serve
from tests.reliability.sizes import SIZES
from tests.reliability.strategies import ID_CHARS

pytestmark = [pytest.mark.reliability, pytest.mark.server, pytest.mark.timeout(SIZES.test_timeout)]

#: Reads of the session id each ``/load`` response reports.
READS_PER_REQUEST = 5


@dataclass(frozen=True)
class PlannedRequest:
    key: str
    headers: dict[str, str]
    #: The id the response must carry, or ``None`` when the server must generate one.
    continued: str | None
    #: An inbound value that must not be used.
    refused: str | None = None
    #: A request body (sent as ``POST``), and whether the app reads it.
    body: bytes = b""
    read_body: bool = False


def _random_id(rng: random.Random, key: str) -> str:
    """A valid id unique to ``key``: a uuid4, or random allowed characters."""
    if rng.random() < 0.5:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    length = rng.randint(1, 200 - len(key) - 1)
    return f"{key}-" + "".join(rng.choices(ID_CHARS, k=length))


#: Over uvicorn's 64 KiB, at which it stops reading a connection until the app reads on.
LARGE_BODY = b"x" * 100_000


def plan_requests(
    run: str, count: int, seed: int, *, bodies: bool = False
) -> Iterator[PlannedRequest]:
    """``count`` requests with a mix of inbound headers; with ``bodies``, one in
    twenty-five is a ``POST`` with a large body, read by the app or not."""
    rng = random.Random(seed)
    for i in range(count):
        key = f"{run}{i}"
        sid = _random_id(rng, key)
        roll = rng.random()
        if roll < 0.55:
            planned = PlannedRequest(key, {"X-Session-Id": sid}, sid)
        elif roll < 0.65:
            planned = PlannedRequest(key, {"X-TraceCtrl-Session": sid}, sid)
        elif roll < 0.75:
            # Lower priority than X-Session-Id: the higher name decides.
            planned = PlannedRequest(
                key, {"Mirascope-Session-Id": f"{key}-low", "x-session-id": sid}, sid
            )
        elif roll < 0.82:
            baggage = f"user=u{i}, session.id={quote(sid, safe='')};prop=1"
            planned = PlannedRequest(key, {"baggage": baggage}, sid)
        elif roll < 0.92:
            planned = PlannedRequest(key, {}, None)
        else:
            bad = f"{key} has a space"
            planned = PlannedRequest(key, {"X-Session-Id": bad}, None, refused=bad)
        if bodies and rng.random() < 0.04:
            planned = replace(planned, body=LARGE_BODY, read_body=rng.random() < 0.5)
        yield planned


@dataclass
class LoadResult:
    #: request key -> the id its response carried
    ids: dict[str, str]
    problems: list[str]


async def drive(base: str, requests: list[PlannedRequest], concurrency: int) -> LoadResult:
    """Send ``requests`` over ``concurrency`` keep-alive connections and check each reply."""
    host, port = base.split(":")
    result = LoadResult({}, [])
    pending = iter(requests)

    async def worker() -> None:
        connection = KeepAliveConnection(host, int(port))
        try:
            for planned in pending:
                query = {"k": planned.key, **({"r": "1"} if planned.read_body else {})}
                target = "/load?" + urlencode(query)
                reply = await connection.get(target, list(planned.headers.items()), planned.body)
                check_reply(planned, reply, result)
        finally:
            await connection.aclose()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return result


def check_reply(planned: PlannedRequest, reply: Reply, result: LoadResult) -> None:
    problems = result.problems
    refused = () if planned.refused is None else (planned.refused,)
    echoed = reply.header_values(b"x-session-id")
    sid = echoed_session(planned.key, reply.status, echoed, planned.continued, refused, problems)
    if sid is None:
        return
    result.ids[planned.key] = sid
    body = json.loads(reply.body)
    reads = body["reads"]
    if body["scope"] != sid or reads != [sid] * READS_PER_REQUEST:
        problems.append(f"{planned.key}: header {sid!r} but the app saw {body}")


async def probe(address: str) -> dict[str, Any]:
    """The server's probe report (see ``tests.reliability.probe``)."""
    host, port = address.split(":")
    connection = KeepAliveConnection(host, int(port))
    try:
        reply = await connection.get("/probe", [])
    finally:
        await connection.aclose()
    report: dict[str, Any] = json.loads(reply.body)
    return report


def check_logs(log_dir: Path, ids: dict[str, str], places: frozenset[str]) -> tuple[int, list[str]]:
    """Check that every log line of this run carries its request's id.

    Returns the number of lines checked and the problems found.
    """
    problems: list[str] = []
    seen: Counter[tuple[str, str]] = Counter()
    checked = 0
    for sid, key, where in read_log_lines(log_dir):
        expected = ids.get(key)
        if expected is None:
            continue  # another test's request, or one whose response was already wrong
        checked += 1
        seen[key, where] += 1
        if sid != expected:
            problems.append(f"log line of {key} from {where} carries {sid!r}, not {expected!r}")
    for key in ids:
        for where in places:
            if seen[key, where] != 1:
                problems.append(f"{key} logged {seen[key, where]} times from {where}")
    return checked, problems


@pytest.mark.anyio
@pytest.mark.parametrize("server", sorted(LOAD_SERVERS))
async def test_no_cross_talk_under_load(server: str, tmp_path: Path) -> None:
    setup = LOAD_SERVERS[server]
    if setup.needs is not None and importlib.util.find_spec(setup.needs) is None:
        pytest.skip(f"{setup.needs} is not installed (the test extra has it where it has wheels)")
    bodies = server in ASGI_FAULT_SERVERS
    requests = list(
        plan_requests("r", SIZES.load_requests, seed=sum(map(ord, server)), bodies=bodies)
    )
    with serve(server, setup.command, tmp_path) as running:
        started = time.monotonic()
        result = await drive(running.address, requests, SIZES.load_concurrency)
        seconds = time.monotonic() - started
        log_lines, log_problems = check_logs(running.log_dir, result.ids, setup.log_places)
        # One process with one event loop: its probe saw every request.
        probed = await probe(running.address) if bodies else None
    problems = result.problems + log_problems
    # Requests that began, or ended, with a session already set in the server's
    # context (an earlier request's): none, large bodies or not.
    if probed is not None and (probed["dirty_entries"] or probed["dirty_exits"]):
        problems.append(f"the probe saw sessions around requests: {probed}")
    if len(set(result.ids.values())) != len(result.ids):
        repeated = [s for s, n in Counter(result.ids.values()).items() if n > 1]
        problems.append(f"one id answered several requests: {repeated[:5]}")
    FIGURES.load.append(
        LoadRun(
            server=server,
            requests=len(requests),
            concurrency=SIZES.load_concurrency,
            mismatches=len(problems),
            log_lines=log_lines,
            seconds=seconds,
        )
    )
    assert not problems, f"{len(problems)} mismatches, first ones: {problems[:10]}"
    assert len(result.ids) == len(requests)
    if probed is not None:
        assert probed["requests"] == len(requests)
        assert {(p.read_body, len(p.body)) for p in requests if p.body} == {
            (True, len(LARGE_BODY)),
            (False, len(LARGE_BODY)),
        }
    assert log_lines == len(setup.log_places) * len(requests)
