"""Entry point of ``make demo``: ``python -m examples.two_agents``."""

from __future__ import annotations

from examples.two_agents.story import main

raise SystemExit(main())
