"""Benchmarks of sessionctx against its peers and against hand-written floors.

``python -m benchmarks`` (or ``make bench``) runs every part and prints one
table: the id generator, the ASGI and WSGI middleware called in-process, a
Django project with sessionctx and with django-guid, instructions counted by
valgrind, end to end under real servers loaded by ``wrk``, and memory over many
requests. Each row says what was measured and, where ``SPEC.md`` section 7 sets
a target, whether it holds. ``--quick`` shrinks every count to a smoke run and
``--only asgi,wsgi`` picks parts.
"""
