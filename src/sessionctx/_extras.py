"""The error an integration raises when the library it needs is not installed."""

from __future__ import annotations

from typing import NoReturn


def missing_library(error: ImportError, module: str, package: str, install: str) -> NoReturn:
    """Raise from ``module``'s failed import of ``package``.

    When ``package`` (a distribution's top-level module, or one of its
    submodules) is not installed, the error says what to install. Any other
    failure, such as a dependency missing from an installed ``package`` or a
    name a too-old version lacks, is raised as it is: installing the extra
    again would not mend it.
    """
    name = error.name
    # A name the package lacks (``from package import name``) is an ImportError
    # with a path: a too-old version. Without a path the package is only a
    # namespace, left by another distribution that shares it (opentelemetry-*).
    missing = isinstance(error, ModuleNotFoundError) or error.path is None
    if missing and name is not None and (name == package or name.startswith(package + ".")):
        raise ImportError(f"{module} needs {name}; install with: {install}", name=name) from None
    if name is None and error.path is None and not _ran_module_code(error):
        # Raised without naming a module, before any module's code ran (an
        # import hook, a patched ``__import__``): the package could not be
        # imported. Its own error stays attached.
        message = f"{module} needs {package}; install with: {install}"
        raise ImportError(message, name=package) from error
    raise error


def _ran_module_code(error: BaseException) -> bool:
    """Whether ``error`` came out of a module's own code (its body ran, and
    raised: an installed library that cannot load), beyond the importing
    module's, where the traceback starts."""
    tb = error.__traceback__
    bodies = 0
    while tb is not None:
        bodies += tb.tb_frame.f_code.co_name == "<module>"
        tb = tb.tb_next
    return bodies > 1
