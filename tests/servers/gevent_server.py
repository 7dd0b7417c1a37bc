"""Serve :mod:`tests.servers.wsgi_server`'s app with gevent's ``pywsgi.WSGIServer``
on 127.0.0.1: ``python -m tests.servers.gevent_server PORT``.

The standard library is monkey-patched first, before anything imports it, so
the app's ``time.sleep`` and locks yield to the other requests' greenlets: every
request runs in a greenlet of its own, all in the process's one thread.

pywsgi's ``error_log`` (where it reports bad requests) is the logger
``gevent.pywsgi``, through ``SessionIdFilter`` (:mod:`tests.servers.server_logging`).
An exception from the application is not logged there: pywsgi hands it to the
hub's ``handle_error``, which prints the traceback and a line
``<environ> failed with <exception type>`` to the hub's ``exception_stream``
(stderr), outside ``logging``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import logging.config  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from tests.servers.server_logging import logconfig_dict  # noqa: E402
from tests.servers.wsgi_server import app  # noqa: E402

# tests.support's HOST: that module imports httpx, and with it trio, which an
# older trio fails to import once select is patched (no select.epoll).
HOST = "127.0.0.1"


def main(port: int) -> None:
    logging.config.dictConfig(logconfig_dict)
    # log=None: no access log line per request.
    server = WSGIServer((HOST, port), app, log=None, error_log=logging.getLogger("gevent.pywsgi"))
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
