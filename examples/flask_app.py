"""Flask with the WSGI ``SessionIdMiddleware`` around ``app.wsgi_app``.

Wrapping ``app.wsgi_app`` rather than ``app`` keeps ``app`` the Flask object, so
``flask run`` and Flask's test client keep working. Views, the response body
(streaming generators included) and log records see the request's session; this
module's log lines show it through ``SessionIdFilter``. Run it from the repository root::

    .venv/bin/flask --app examples.flask_app run --port 8000
    curl -i -H 'X-Session-Id: my-session' http://127.0.0.1:8000/whoami
"""

from __future__ import annotations

import logging

from flask import Flask

from sessionctx import current_session_id
from sessionctx.log_filters import SessionIdFilter
from sessionctx.wsgi import SessionIdMiddleware

log = logging.getLogger(__name__)
_handler = logging.StreamHandler()
_handler.addFilter(SessionIdFilter())
_handler.setFormatter(logging.Formatter("%(levelname)s session=%(session_id)s %(message)s"))
log.addHandler(_handler)
log.setLevel(logging.INFO)

app = Flask(__name__)
app.wsgi_app = SessionIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]


@app.get("/whoami")
def whoami() -> dict[str, str | None]:
    log.info("whoami")
    return {"session_id": current_session_id()}
