"""Serve :mod:`tests.servers.wsgi_server`'s app with uWSGI (the ``pyuwsgi``
package) on 127.0.0.1: ``python -m tests.servers.uwsgi_server PORT``.

A master process and one worker with 8 threads; the worker speaks HTTP itself
(``--http-socket``), with no router in front. ``pyuwsgi.run()`` takes uWSGI's
command-line options and does not return; ``python -m pyuwsgi`` does not work
(it is an extension module).

uWSGI does not log through Python's ``logging``: it prints an application's
exception with ``PyErr_Print()`` (a plain traceback on stderr).
"""

from __future__ import annotations

import sys

import pyuwsgi

from tests.support import HOST


def main(port: int) -> None:
    pyuwsgi.run(
        [
            *("--http-socket", f"{HOST}:{port}"),
            *("--module", "tests.servers.wsgi_server:app"),
            *("--master", "--workers", "1", "--enable-threads", "--threads", "8"),
            # SIGTERM stops uWSGI (its default for SIGTERM is to reload), and
            # it exits rather than serving errors when the app cannot be loaded.
            *("--die-on-term", "--need-app"),
            # No access log line per request: errors only.
            "--disable-logging",
        ]
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
