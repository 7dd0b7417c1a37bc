"""How a function decorated with ``session()`` or wrapped by ``wrap_context()``
runs what it returns later: each step of a coroutine, generator or async
generator gets the function's session or context, and the consumer's own is
back between steps.

Loaded by the first function decorated or wrapped, not by ``import sessionctx``:
a program that only uses the middlewares and ``with session()`` blocks never
compiles it.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextvars import Token
from typing import Any, TypeVar, cast

from sessionctx.session import (
    _Active,
    _current,
    _get,
    _note_escaping,
    _open_scopes,
    _OpenScope,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _Steps:
    """The session of a decorated generator, set around each of its steps.

    What a step leaves (a ``with session()`` block still open, a
    ``set_session_id()``) is kept for the next step, as a generator that is
    not decorated keeps it; the consumer's own session is back after each step.
    The steps may each run in a context of their own (a consumer that steps the
    generator in threads or new tasks, asyncio closing it in a task of its own).
    """

    __slots__ = ("_tokens", "active", "scopes")

    def __init__(self, active: _Active) -> None:
        self.active: _Active | None = active
        # The generator's own open session() scopes, apart from the consumer's.
        self.scopes: tuple[_OpenScope, ...] = ()
        self._tokens: tuple[Token[_Active | None], Token[Any]] | None = None

    def __enter__(self) -> None:
        self._tokens = (_current.set(self.active), _open_scopes.set(self.scopes))

    def __exit__(self, *exc_info: object) -> None:
        _note_escaping(exc_info[1])
        self.active = _get()
        scopes = _open_scopes.get()
        if scopes:
            # A later step may run in another context than the one a block was
            # entered in: its exit restores by value, not with its token.
            scopes = tuple(
                entry if entry.carried else entry._replace(carried=True) for entry in scopes
            )
        self.scopes = scopes
        current, scopes_token = cast("tuple[Token[_Active | None], Token[Any]]", self._tokens)
        _open_scopes.reset(scopes_token)
        _current.reset(current)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """One step: ``fn(*args)`` with the generator's session set."""
        with self:
            return fn(*args)


#: Runs one step of a generator or awaitable: ``run(gen.send, value)``.
_Runner = Callable[..., Any]


def _stepped(
    run: _Runner, gen: Generator[Any, Any, T], closed: list[Any] | None = None
) -> Generator[Any, Any, T]:
    """Delegate to ``gen`` (``next``, ``send``, ``throw``, ``close`` and its return
    value), each of its steps run through ``run``: with a session set
    (:meth:`_Steps.run`), or in a context (``Context.run``).

    From Python 3.13, ``close()`` returns what a generator returns on its
    ``GeneratorExit``: so does this one's, and the value goes into ``closed``
    too, for a generator or coroutine delegating here (``yield from`` and
    ``await`` drop it)."""
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        try:
            item = run(gen.send, sent) if thrown is None else run(gen.throw, thrown)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            thrown = None
        try:
            sent = yield item
        except GeneratorExit:
            value = run(gen.close)
            if value is None:
                raise
            if closed is not None:
                closed.append(value)
            return cast(T, value)
        except BaseException as exc:
            # Thrown in by the consumer: passed on to ``gen``.
            thrown = exc
            sent = None


class _SteppedAwaitable:
    """``awaitable``, each of its steps run through ``run`` (see :func:`_stepped`,
    which also says what ``closed`` holds)."""

    __slots__ = ("_awaitable", "_closed", "_run")

    def __init__(
        self, run: _Runner, awaitable: Awaitable[Any], closed: list[Any] | None = None
    ) -> None:
        self._run = run
        self._awaitable = awaitable
        self._closed = closed

    def __await__(self) -> Generator[Any, Any, Any]:
        return _stepped(self._run, self._awaitable.__await__(), self._closed)


async def _await_stepped(run: _Runner, awaitable: Awaitable[T]) -> T:
    """A coroutine (``asyncio.create_task`` takes no other awaitable) awaiting
    ``awaitable``, each of its steps run through ``run``; its ``close()``
    returns what ``awaitable`` returns on its ``GeneratorExit``, as a coroutine's
    does from Python 3.13."""
    closed: list[Any] = []
    try:
        return cast(T, await _SteppedAwaitable(run, awaitable, closed))
    except GeneratorExit:
        return cast(T, _close_value(closed))


def _async_gen_function(
    start: Callable[..., tuple[_Runner, AsyncGenerator[Any, Any]]],
) -> Callable[..., AsyncGenerator[Any, Any]]:
    """An async generator function that delegates to the async generator
    ``start(*args, **kwargs)`` returns (``asend``, ``athrow``, ``aclose``), each of
    its steps run through the runner ``start`` returns (see :func:`_stepped`).

    An async generator cannot delegate with ``yield from``; a decorated one must
    stay an async generator function (Starlette's ``lifespan`` and FastAPI's
    dependencies check), hence a function made here.
    """

    async def steps(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        run, agen = start(*args, **kwargs)
        step: Awaitable[Any] | None = _first_step_unhooked(agen)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            if step is None:
                step = agen.asend(sent) if thrown is None else agen.athrow(thrown)
            try:
                item = await _SteppedAwaitable(run, step)
            except StopAsyncIteration:
                return
            finally:
                step = thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                await _SteppedAwaitable(run, agen.aclose())
                raise
            except BaseException as exc:
                # Thrown in by the consumer: passed on to ``agen``.
                thrown = exc
                sent = None

    return steps


def _first_step_unhooked(agen: AsyncGenerator[Any, Any]) -> Awaitable[Any]:
    """``agen.asend(None)``, made so that the event loop's async generator hooks
    stay off ``agen``: the async generator driving it closes it, and only the
    driver is the loop's to finalize.

    Otherwise ``asyncio.run`` closing what is left at its end (before Python
    3.13) could close both at once and find ``agen`` already running, and a
    garbage collection of both (a cycle) could close ``agen`` outside its
    session. A generator takes its hooks when its first ``asend()``,
    ``athrow()`` or ``aclose()`` awaitable is made, which runs none of its code.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=_left_to_the_driver)
    try:
        return agen.asend(None)
    finally:
        sys.set_asyncgen_hooks(*hooks)


def _left_to_the_driver(agen: AsyncGenerator[Any, Any]) -> None:
    """The finalizer of a driven async generator: its driver's finalizer closes it."""


@types.coroutine
def _stepped_iterable_coroutine(
    run: _Runner, gen: Generator[Any, Any, T]
) -> Generator[Any, Any, T]:
    """:func:`_stepped` for a generator-based coroutine (``@types.coroutine``),
    awaitable as it was."""
    closed: list[Any] = []
    try:
        return (yield from _stepped(run, gen, closed))
    except GeneratorExit:
        return cast(T, _close_value(closed))


def _close_value(closed: list[Any]) -> Any:
    """For a generator or coroutine delegating to :func:`_stepped` (``yield
    from``, ``await``) and closed: what the generator it steps returned on its
    ``GeneratorExit`` (kept in ``closed``), to return in turn; else
    ``GeneratorExit`` again."""
    if not closed:
        raise GeneratorExit
    return closed[0]


def _is_iterable_coroutine(code: types.CodeType) -> bool:
    return bool(code.co_flags & inspect.CO_ITERABLE_COROUTINE)


def _generator_function_like(fn: Callable[..., Any], wrapper: F) -> F:
    """``wrapper`` of the generator function ``fn``; a generator-based coroutine
    function (awaitable, ``@types.coroutine``) when ``fn`` is one."""
    while True:
        if inspect.ismethod(fn):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            fn = fn.func
        else:
            break
    code = getattr(fn, "__code__", None)
    if code is not None and _is_iterable_coroutine(code):
        return cast(F, types.coroutine(wrapper))
    return wrapper


def _stepping_function(
    fn: Callable[..., Any], new_run: Callable[[], _Runner]
) -> Callable[..., Any] | None:
    """A wrapper of ``fn``'s kind (a coroutine, async generator or generator
    function) whose every call steps what ``fn`` returns through a runner of its
    own, ``new_run()`` (see :func:`_stepped`); ``None`` for any other callable."""
    if inspect.iscoroutinefunction(fn):
        async_fn = cast(Callable[..., Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            # _await_stepped's body: awaiting it would drop its close() value.
            closed: list[Any] = []
            try:
                return await _SteppedAwaitable(new_run(), async_fn(*args, **kwargs), closed)
            except GeneratorExit:
                return _close_value(closed)

        return run_async

    if inspect.isasyncgenfunction(fn):
        return functools.wraps(fn)(_async_gen_function(lambda *a, **k: (new_run(), fn(*a, **k))))

    if inspect.isgeneratorfunction(fn):
        gen_fn = cast(Callable[..., Generator[Any, Any, Any]], fn)

        @functools.wraps(fn)
        def run_gen(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            closed: list[Any] = []
            try:
                return (yield from _stepped(new_run(), gen_fn(*args, **kwargs), closed))
            except GeneratorExit:
                return _close_value(closed)

        return _generator_function_like(fn, run_gen)
    return None


def _later_steps(run: _Runner, result: T) -> T:
    """``result`` of a call, its code that runs later (a coroutine's, a
    generator's, an async generator's) stepped through ``run``; any other value
    as it is."""
    if isinstance(result, types.CoroutineType):
        return cast(T, _await_stepped(run, result))
    if isinstance(result, types.GeneratorType):
        if _is_iterable_coroutine(result.gi_code):
            return cast(T, _stepped_iterable_coroutine(run, result))
        return cast(T, _stepped(run, result))
    if isinstance(result, types.AsyncGeneratorType):
        return cast(T, _async_gen_function(lambda: (run, result))())
    return result
