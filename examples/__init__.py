"""Runnable examples of sessionctx: one per framework, and the two-service demo.

Each module's docstring says how to run it from the repository root; ``make demo``
runs :mod:`examples.two_agents`.
"""
