"""Serve :mod:`tests.servers.wsgi_server`'s app with waitress (8 threads) on
127.0.0.1: ``python -m tests.servers.waitress_server PORT``.

Its error log goes through ``SessionIdFilter`` (:mod:`tests.servers.server_logging`).
"""

from __future__ import annotations

import logging.config
import sys

import waitress

from tests.servers.server_logging import logconfig_dict
from tests.servers.wsgi_server import app
from tests.support import HOST


def main(port: int) -> None:
    logging.config.dictConfig(logconfig_dict)
    waitress.serve(app, host=HOST, port=port, threads=8)


if __name__ == "__main__":
    main(int(sys.argv[1]))
