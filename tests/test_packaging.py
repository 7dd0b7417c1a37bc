"""What ``pip install sessionctx`` gets: the wheel and the sdist built from this
tree by its build backend, and the wheel installed into a fresh virtual
environment that has none of the extras' libraries."""

from __future__ import annotations

import email.parser
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support import NEEDS_EXTRA
from tests.support import REPO_ROOT as ROOT

SOURCE = ROOT / "src" / "sessionctx"
EXTRAS = ("otel", "httpx", "requests", "structlog", "celery")


def _build(kind: str, out: Path) -> Path:
    """Build with the PEP 517 hook of the backend pyproject.toml names, as pip does."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, hatchling.build as b; print(b.build_{kind}(sys.argv[1]))",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("hatchling.build", reason="builds with hatchling (the test extra has it)")
    out = tmp_path_factory.mktemp("dist")
    return _build("wheel", out), _build("sdist", out)


def _package_files() -> set[str]:
    """The package's files that git tracks, as paths under ``src/``."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("compares the archives with the files git tracks")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "src/sessionctx"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {name.removeprefix("src/") for name in listed.split("\0") if name}


def test_the_wheel_holds_the_package_and_py_typed_and_nothing_else(
    built: tuple[Path, Path],
) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {name for name in names if not name.startswith("sessionctx-")}
    assert package == _package_files()
    assert "sessionctx/py.typed" in package
    assert {name.split("/", 1)[0] for name in names - package} == {
        wheel.name.split("-py3")[0] + ".dist-info"
    }


def test_the_wheel_metadata_has_no_dependency_but_its_extras(built: tuple[Path, Path]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["Name"] == "sessionctx"
    assert metadata["Requires-Python"] == ">=3.10"
    provided = set(metadata.get_all("Provides-Extra") or [])
    assert {*EXTRAS, "all"} <= provided
    requires = metadata.get_all("Requires-Dist") or []
    assert requires
    # The core needs nothing: every requirement belongs to an extra.
    assert all("extra ==" in requirement for requirement in requires), requires
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.strip() == (ROOT / "README.md").read_text(encoding="utf-8").strip()


def test_the_sdist_holds_what_builds_and_tests_the_package(built: tuple[Path, Path]) -> None:
    _, sdist = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {f"src/{name}" for name in _package_files()}
    expected |= {"pyproject.toml", "README.md", "LICENSE", "Makefile", "tests/test_session.py"}
    assert expected <= names, expected - names
    # Only what the project tracks: not the results make bench writes, nor a
    # venv or build output in the working tree.
    assert {name.split("/", 1)[0] for name in names} <= {
        ".ci",
        ".gitignore",
        "LICENSE",
        "Makefile",
        "PKG-INFO",
        "README.md",
        "benchmarks",
        "constraints",
        "examples",
        "pyproject.toml",
        "src",
        "tests",
    }
    assert not any(name.startswith("benchmarks/results") for name in names)


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel installed into it; its python."""
    wheel, _ = built
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-index", "--no-deps", "--target", purelib, str(wheel)),
        ],
        check=True,
        timeout=120,
    )
    return python


def _run_in(python: Path, code: str) -> str:
    done = subprocess.run(
        [str(python), "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=python.parent,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_installed_wheel_works_with_the_standard_library_alone(installed: Path) -> None:
    code = (
        "import json, pathlib, sessionctx\n"
        "from sessionctx.asgi import SessionIdMiddleware as A\n"
        "from sessionctx.wsgi import SessionIdMiddleware as W\n"
        "from sessionctx.log_filters import SessionIdFilter\n"
        "with sessionctx.session('abc-123'):\n"
        "    inside = sessionctx.current_session_id()\n"
        "print(json.dumps({\n"
        "    'file': sessionctx.__file__,\n"
        "    'typed': (pathlib.Path(sessionctx.__file__).parent / 'py.typed').is_file(),\n"
        "    'inside': inside,\n"
        "    'after': sessionctx.current_session_id(),\n"
        "}))\n"
    )
    state = json.loads(_run_in(installed, code))
    assert Path(state["file"]).is_relative_to(installed.parent.parent)
    assert state == {**state, "typed": True, "inside": "abc-123", "after": None}


def test_every_module_that_needs_an_extra_is_listed() -> None:
    found = {
        f"sessionctx.{path.relative_to(SOURCE).with_suffix('').as_posix().replace('/', '.')}"
        for path in SOURCE.rglob("*.py")
        if "_extras import missing_library" in path.read_text(encoding="utf-8")
    }
    assert found == set(NEEDS_EXTRA)
    assert {extra for _, extra in NEEDS_EXTRA.values()} == set(EXTRAS)


@pytest.mark.parametrize("module", sorted(NEEDS_EXTRA))
def test_a_module_without_its_extra_says_what_to_install(installed: Path, module: str) -> None:
    library, extra = NEEDS_EXTRA[module]
    code = (
        "import importlib, json, sys\n"
        "try:\n"
        f"    importlib.import_module({module!r})\n"
        "except ImportError as error:\n"
        "    print(json.dumps([str(error), error.name]))\n"
        "else:\n"
        "    sys.exit('imported')\n"
    )
    message, name = json.loads(_run_in(installed, code))
    assert f'pip install "sessionctx[{extra}]"' in message
    assert name == library
