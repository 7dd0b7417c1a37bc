"""Each integration imports its library only when the user imports it, and
says which extra to install when the library is missing."""

from __future__ import annotations

import importlib
import pathlib
import re
import sys
import textwrap
from collections.abc import Callable

import pytest

import sessionctx
from sessionctx._extras import missing_library
from tests.support import NEEDS_EXTRA, run_python

INTEGRATIONS = sorted(NEEDS_EXTRA)


def block(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` (and its submodules) fail as if it were not installed."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


@pytest.mark.parametrize(
    ("module", "missing", "advice"),
    [
        pytest.param(
            "sessionctx.context", "opentelemetry", 'pip install "sessionctx[otel]"', id="context"
        ),
        pytest.param(
            "sessionctx.integrations.opentelemetry",
            "opentelemetry",
            'pip install "sessionctx[otel]" opentelemetry-sdk',
            id="opentelemetry-api",
        ),
        pytest.param(
            "sessionctx.integrations.opentelemetry",
            "opentelemetry.sdk",
            'pip install "sessionctx[otel]" opentelemetry-sdk',
            id="opentelemetry-sdk",
        ),
        pytest.param(
            "sessionctx.integrations.httpx", "httpx", 'pip install "sessionctx[httpx]"', id="httpx"
        ),
        pytest.param(
            "sessionctx.integrations.requests",
            "requests",
            'pip install "sessionctx[requests]"',
            id="requests",
        ),
        pytest.param(
            "sessionctx.integrations.structlog",
            "structlog",
            'pip install "sessionctx[structlog]"',
            id="structlog",
        ),
        pytest.param(
            "sessionctx.integrations.celery",
            "celery",
            'pip install "sessionctx[celery]"',
            id="celery",
        ),
    ],
)
def test_a_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, missing: str, advice: str
) -> None:
    block(monkeypatch, missing)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape(advice)) as raised:
        importlib.import_module(module)
    assert raised.value.__suppress_context__
    assert module in str(raised.value)
    # As Python's own ModuleNotFoundError: the name of what is missing.
    assert raised.value.name is not None
    assert raised.value.name.split(".")[0] == missing.split(".")[0]


def test_importing_sessionctx_imports_no_integration() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import sessionctx, sessionctx.integrations
        libraries = ("opentelemetry", "httpx", "requests", "structlog", "celery")
        loaded = [m for m in {INTEGRATIONS!r} + list(libraries) if m in sys.modules]
        print(",".join(loaded))
        """
    )
    done = run_python("-c", script)
    assert done.stdout.strip() == ""


@pytest.mark.parametrize(
    ("module", "dependency"),
    [
        pytest.param("sessionctx.integrations.requests", "urllib3", id="requests-without-urllib3"),
        pytest.param("sessionctx.integrations.httpx", "idna", id="httpx-without-idna"),
        pytest.param("sessionctx.integrations.celery", "kombu", id="celery-without-kombu"),
    ],
)
def test_a_broken_install_is_not_taken_for_a_missing_extra(module: str, dependency: str) -> None:
    """The library is there but cannot be imported: its own error comes through,
    since installing the extra again would not mend it."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules[{dependency!r}] = None  # as if it were not installed
        try:
            import {module}
        except ModuleNotFoundError as error:
            print(type(error).__name__, error.name)
        """
    )
    done = run_python("-c", script)
    kind, name = done.stdout.split()
    assert kind == "ModuleNotFoundError"
    assert name.split(".")[0] == dependency


def test_a_missing_library_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, "opentelemetry.sdk")
    monkeypatch.delitem(sys.modules, "sessionctx.integrations.opentelemetry", raising=False)
    with pytest.raises(ImportError, match=r"needs opentelemetry\.sdk\S*; install with"):
        importlib.import_module("sessionctx.integrations.opentelemetry")


def test_a_namespace_left_by_another_distribution_is_a_missing_library(
    tmp_path: pathlib.Path,
) -> None:
    """``opentelemetry-proto`` without ``opentelemetry-api`` leaves ``opentelemetry``
    a namespace package, where ``from opentelemetry import context`` fails."""
    (tmp_path / "opentelemetry" / "proto").mkdir(parents=True)
    script = textwrap.dedent(
        """
        import sys
        for name in [n for n in sys.modules if n.split(".")[0] == "opentelemetry"]:
            del sys.modules[name]
        sys.path = [p for p in sys.path if "site-packages" not in p]
        sys.path[:0] = [sys.argv[1], sys.argv[2]]
        try:
            import sessionctx.context
        except ImportError as error:
            print(error)
        """
    )
    src = pathlib.Path(sessionctx.__file__).parent.parent
    done = run_python("-c", script, str(tmp_path), str(src))
    assert "sessionctx.context needs opentelemetry; install with" in done.stdout


def test_a_name_a_too_old_version_lacks_is_not_taken_for_a_missing_library(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "httpx").mkdir()
    (tmp_path / "httpx" / "__init__.py").write_text("from httpx._nothing_here import Client\n")
    (tmp_path / "httpx" / "_nothing_here.py").write_text("")
    script = textwrap.dedent(
        """
        import sys
        sys.path[:0] = [sys.argv[1]]
        try:
            import sessionctx.integrations.httpx
        except ImportError as error:
            print(type(error).__name__, error)
        """
    )
    done = run_python("-c", script, str(tmp_path))
    assert done.stdout.startswith("ImportError cannot import name 'Client'")


def test_another_modules_failure_is_raised_as_it_is() -> None:
    error = ModuleNotFoundError("No module named 'urllib3'", name="urllib3")
    with pytest.raises(ModuleNotFoundError) as raised:
        missing_library(error, "sessionctx.integrations.requests", "requests", "pip install x")
    assert raised.value is error


@pytest.mark.parametrize("how", ["import-hook", "patched-import"])
@pytest.mark.parametrize("module", INTEGRATIONS)
def test_an_import_error_that_names_no_module_still_names_the_extra(module: str, how: str) -> None:
    """Tests and sandboxes block a package with a bare ``ImportError`` (an
    import hook, a patched ``__import__``): it carries no module name."""
    package, extra = NEEDS_EXTRA[module]
    script = textwrap.dedent(
        f"""
        import builtins, sys

        def blocked(name):
            return name == {package!r} or name.startswith({package!r} + ".")

        if {how!r} == "import-hook":
            class Blocker:
                def find_spec(self, name, path=None, target=None):
                    if blocked(name):
                        raise ImportError("blocked " + name)
                    return None
            sys.meta_path.insert(0, Blocker())
        else:
            real_import = builtins.__import__
            def fake_import(name, *args, **kwargs):
                if blocked(name):
                    raise ImportError("No module named " + name)
                return real_import(name, *args, **kwargs)
            builtins.__import__ = fake_import
        try:
            import {module}
        except ImportError as error:
            print(error.name)
            print(error)
            print(type(error.__cause__).__name__)
        """
    )
    name, message, cause = run_python("-c", script).stdout.splitlines()
    assert name == package
    assert message.startswith(f"{module} needs {package}; install with: ")
    assert f'pip install "sessionctx[{extra}]"' in message
    assert cause == "ImportError"


@pytest.mark.parametrize("module", INTEGRATIONS)
def test_an_installed_library_that_fails_to_load_is_not_taken_for_a_missing_extra(
    module: str, tmp_path: pathlib.Path
) -> None:
    """Its own bare ImportError (urllib3 2 on an old OpenSSL raises one) comes
    through: installing the extra again would not mend it."""
    package, _ = NEEDS_EXTRA[module]
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(
        'raise ImportError("needs OpenSSL 1.1.1+")\n', encoding="utf-8"
    )
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        try:
            import {module}
        except ImportError as error:
            print(error)
        """
    )
    assert run_python("-c", script).stdout.strip() == "needs OpenSSL 1.1.1+"


def _error_in_module_calling(call: Callable[[], object]) -> ImportError:
    """The ImportError raised while an importing module's body (as an
    integration's ``try: import library``) runs ``call``, with its traceback."""
    body = compile("call()", "<integration module>", "exec")
    try:
        exec(body, {"call": call})
    except ImportError as error:
        return error
    raise AssertionError("no ImportError")


def test_a_bare_import_error_before_any_module_ran_names_the_extra() -> None:
    def blocked() -> None:  # an import hook's find_spec, a patched __import__
        raise ImportError("blocked")

    error = _error_in_module_calling(blocked)
    with pytest.raises(ImportError, match=r'needs httpx; install with: pip install "x"') as raised:
        missing_library(error, "sessionctx.integrations.httpx", "httpx", 'pip install "x"')
    assert raised.value.name == "httpx"
    assert raised.value.__cause__ is error


def test_a_bare_import_error_from_a_library_module_body_is_raised_as_it_is() -> None:
    library_body = compile('raise ImportError("needs OpenSSL")', "<library>", "exec")

    def import_library() -> None:
        exec(library_body, {})  # the library's own module code runs, and raises

    error = _error_in_module_calling(import_library)
    with pytest.raises(ImportError) as raised:
        missing_library(error, "sessionctx.integrations.httpx", "httpx", 'pip install "x"')
    assert raised.value is error
