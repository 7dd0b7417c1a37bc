"""A minimal Django project with sessionctx, served over WSGI or ASGI.

``wsgi.py`` and ``asgi.py`` wrap Django's handler with the matching
``SessionIdMiddleware``, outermost, so every response carries ``X-Session-Id``, Django's
own error pages included. Sync views see the session (under ASGI, Django runs them
through asgiref, which copies the request's context into the thread), and so do async
views. ``settings.LOGGING`` adds ``SessionIdFilter`` with ``dictConfig``, so the view's
log line shows ``session=<id>``. No database is needed.

Run it from the repository root, over WSGI (``runserver`` serves
``WSGI_APPLICATION``, i.e. ``wsgi.application``) or over ASGI::

    .venv/bin/python -m examples.django_project runserver 127.0.0.1:8000 --noreload
    .venv/bin/gunicorn examples.django_project.wsgi:application -b 127.0.0.1:8000
    .venv/bin/uvicorn examples.django_project.asgi:application --port 8000
    curl -i -H 'X-Session-Id: my-session' http://127.0.0.1:8000/whoami
    curl -i http://127.0.0.1:8000/whoami-async
"""
