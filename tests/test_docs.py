"""The examples in the docstrings of the library's modules run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sessionctx

# Every module of the package, found rather than listed, so a new one is not missed.
MODULES = (
    "sessionctx",
    *sorted(m.name for m in pkgutil.walk_packages(sessionctx.__path__, "sessionctx.")),
)


def collect() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found: list[doctest.DocTest] = []
    for name in MODULES:
        module = importlib.import_module(name)
        found.extend(test for test in finder.find(module, name) if test.examples)
    return sorted(found, key=lambda test: test.name)


DOCTESTS = collect()


def test_the_modules_have_examples() -> None:
    names = {test.name for test in DOCTESTS}
    for expected in (
        "sessionctx",
        "sessionctx.session.session",
        "sessionctx.session.set_session_id",
        "sessionctx.session.inject_session_headers",
        "sessionctx._headers.extract_session_id",
        "sessionctx._validation.is_valid_session_id",
        "sessionctx.asgi.SessionIdMiddleware",
        "sessionctx.wsgi.SessionIdMiddleware",
        "sessionctx.context.propagated_context",
        "sessionctx.integrations.structlog.add_session_id",
    ):
        assert expected in names


@pytest.mark.parametrize("test", [pytest.param(t, id=t.name) for t in DOCTESTS])
def test_docstring_example(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)
    assert result.attempted == len(test.examples)
