"""Prints the figures table after a run that included reliability tests."""

from __future__ import annotations

import pytest

from tests.reliability.figures import FIGURES, render
from tests.reliability.sizes import SIZES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES.empty():
        return
    terminalreporter.section("reliability figures")
    for line in render(FIGURES, SIZES.name):
        terminalreporter.write_line(line)
