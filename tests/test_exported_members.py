"""The public names of ``sessionctx`` and what ``import sessionctx`` pulls in (SPEC §1)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import types

import pytest

import sessionctx

CORE_NAMES = {
    "SESSION_HEADER_NAME",
    "ACCEPTED_HEADER_NAMES",
    "SESSION_ID_ENV_VAR",
    "SessionContext",
    "new_session",
    "set_session_id",
    "reset_session",
    "current_session",
    "current_session_id",
    "session",
    "extract_session_id",
    "inject_session_headers",
    "is_valid_session_id",
    "validate_session_id",
    "wrap_context",
    "ContextThreadPoolExecutor",
    "session_id_of",
}
INTEGRATION_PACKAGES = {"httpx", "opentelemetry", "structlog", "celery", "requests", "starlette"}
SUBPROCESS_TIMEOUT = 60


def session_module() -> types.ModuleType:
    return importlib.import_module("sessionctx.session")


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "module",
    [pytest.param(sessionctx, id="sessionctx"), pytest.param(session_module(), id="session")],
)
def test_all_is_sorted_and_complete(module: types.ModuleType) -> None:
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    assert set(exported) >= CORE_NAMES
    for name in exported:
        assert hasattr(module, name), name


def test_both_modules_export_the_same_objects() -> None:
    module = session_module()
    for name in CORE_NAMES:
        assert getattr(sessionctx, name) is getattr(module, name), name


def test_the_constants() -> None:
    assert sessionctx.SESSION_HEADER_NAME == "X-Session-Id"
    assert sessionctx.ACCEPTED_HEADER_NAMES == (
        "X-Session-Id",
        "X-TraceCtrl-Session",
        "Mirascope-Session-Id",
    )
    assert sessionctx.SESSION_ID_ENV_VAR == "SESSIONCTX_SESSION_ID"


def test_the_session_attribute_is_the_function_and_the_module_stays_importable() -> None:
    from sessionctx.session import current_session_id, new_session

    assert isinstance(sessionctx.session, types.FunctionType)
    module = importlib.import_module("sessionctx.session")
    assert isinstance(module, types.ModuleType)
    assert module.new_session is new_session
    assert module.current_session_id is current_session_id
    # Importing the module again does not rebind the package attribute.
    assert isinstance(sessionctx.session, types.FunctionType)
    assert sessionctx.session is module.session
    from sessionctx import session

    assert session is module.session


def test_in_a_fresh_interpreter_the_module_import_does_not_rebind_the_function() -> None:
    code = (
        "import types\n"
        "from sessionctx.session import new_session\n"
        "import sessionctx.session\n"
        "import sessionctx\n"
        "assert isinstance(sessionctx.session, types.FunctionType), sessionctx.session\n"
        "assert callable(new_session)\n"
        "with sessionctx.session('abc'):\n"
        "    print(sessionctx.current_session_id())\n"
    )
    assert run_python(code).strip() == "abc"


def test_import_sessionctx_imports_only_the_standard_library() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import sessionctx\n"
        "new = sorted(set(sys.modules) - before)\n"
        "print(json.dumps({'new': new, 'all': sorted(sys.modules)}))\n"
    )
    modules = json.loads(run_python(code))
    new = {name.partition(".")[0] for name in modules["new"]}
    assert "sessionctx" in new
    assert new - {"sessionctx"} <= set(sys.stdlib_module_names), new - set(sys.stdlib_module_names)
    loaded = {name.partition(".")[0] for name in modules["all"]}
    assert not loaded & INTEGRATION_PACKAGES


def test_import_sessionctx_leaves_stepping_and_the_log_filter_to_first_use() -> None:
    # The stepping of coroutines and generators is loaded by the first function
    # decorated with session() or wrapped by wrap_context(), the log filter's
    # record code by the filter's import: a program using neither never
    # compiles them.
    later = ["sessionctx._stepping", "sessionctx.log_filters"]
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import sessionctx\n"
        "with sessionctx.session('abc'):\n"
        "    pass\n"
        f"later = set({later!r})\n"
        "print(' '.join(sorted(later & (set(sys.modules) - before))))\n"
        "sessionctx.wrap_context(print)\n"
        "print(' '.join(sorted(later & (set(sys.modules) - before))))\n"
    )
    assert run_python(code).splitlines() == ["", "sessionctx._stepping"]


def test_import_sessionctx_has_no_side_effects() -> None:
    code = (
        "import json, logging, os\n"
        "env = dict(os.environ)\n"
        "import sessionctx\n"
        "print(json.dumps({\n"
        "    'env_changed': dict(os.environ) != env,\n"
        "    'root_handlers': len(logging.getLogger().handlers),\n"
        "    'handlers': len(logging.getLogger('sessionctx').handlers),\n"
        "    'session': sessionctx.current_session_id(),\n"
        "}))\n"
    )
    # Even with the env var set, importing starts no session.
    state = json.loads(run_python(code, SESSIONCTX_SESSION_ID="from-env"))
    assert state == {"env_changed": False, "root_handlers": 0, "handlers": 0, "session": None}


PUBLIC_MODULES = [
    "sessionctx",
    "sessionctx.asgi",
    "sessionctx.context",
    "sessionctx.log_filters",
    "sessionctx.session",
    "sessionctx.wsgi",
    "sessionctx.integrations.celery",
    "sessionctx.integrations.httpx",
    "sessionctx.integrations.opentelemetry",
    "sessionctx.integrations.requests",
    "sessionctx.integrations.structlog",
]


def public_api(module_name: str) -> list[tuple[str, types.FunctionType]]:
    """The functions of ``module_name``'s ``__all__``, and the public methods
    (with ``__call__``) its classes define themselves."""
    module = importlib.import_module(module_name)
    found: list[tuple[str, types.FunctionType]] = []
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type):
            found.extend(
                (f"{name}.{attr}", inspect.unwrap(member))
                for attr, member in vars(value).items()
                if (not attr.startswith("_") or attr == "__call__") and inspect.isfunction(member)
            )
        elif inspect.isfunction(value):
            found.append((name, value))
    return found


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_function_and_method_is_documented_and_annotated(module_name: str) -> None:
    """What type checkers and editors show users: a docstring, and a type for
    every parameter and the result (pyright's --verifytypes asks the same)."""
    api = public_api(module_name)
    assert api
    for name, function in api:
        # Its own: editors and pyright show no docstring inherited from a base class.
        assert function.__doc__, f"{module_name}.{name} has no docstring"
        annotations = getattr(function, "__annotations__", {})
        parameters = inspect.signature(function).parameters
        unannotated = [p for p in parameters if p not in {"self", "cls"} and p not in annotations]
        assert not unannotated, f"{module_name}.{name}: {unannotated} have no type"
        assert "return" in annotations, f"{module_name}.{name} has no return type"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_attributes_of_public_classes_have_types(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        cls = getattr(module, name)
        if not isinstance(cls, type):
            continue
        for klass in cls.__mro__:
            if not klass.__module__.startswith("sessionctx"):
                continue
            public = [s for s in getattr(klass, "__slots__", ()) if not s.startswith("_")]
            missing = [s for s in public if s not in inspect.get_annotations(klass)]
            assert not missing, f"{klass.__qualname__} (in {name}): {missing} have no type"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_module_lists_its_names_in_sorted_order(module_name: str) -> None:
    exported = list(importlib.import_module(module_name).__all__)
    assert exported == sorted(exported)
