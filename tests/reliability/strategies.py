"""Hypothesis strategies for inbound session headers, and what each should decide.

Every generated header carries its own model of what it means, so the tests
can state the expected outcome without calling the code under test:
``expected_outcome`` applies the priority rule of SPEC §1/§3 with the
independent id oracle.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from urllib.parse import quote

from hypothesis import strategies as st

from tests.reliability.oracle import follows_id_rule

__all__ = [
    "ACCEPT_OPTIONS",
    "HEADER_NAME_OPTIONS",
    "INBOUND_NAMES",
    "Inbound",
    "Outcome",
    "expected_outcome",
    "inbound_headers",
    "latin1_values",
    "priority_names",
    "valid_ids",
]

ID_CHARS = "".join(c for c in string.printable if follows_id_rule(c))
#: Characters that must never get from a request into a response header.
BREAKERS = ' \t\r\n\x00\x0b\x0c\x1b\x7f\x80\xa0\xff",;\\'

valid_ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=200)


@st.composite
def _near_valid(draw: st.DrawFn) -> str:
    """A valid id with one character that breaks the rule, or one too many characters."""
    if draw(st.booleans()):
        return draw(st.text(alphabet=ID_CHARS, min_size=201, max_size=260))
    base = draw(valid_ids)
    at = draw(st.integers(0, len(base)))
    return base[:at] + draw(st.sampled_from(BREAKERS)) + base[at:]


#: Header values as WSGI servers hand them over: latin-1 ``str``.
latin1_values = st.one_of(
    valid_ids,
    st.uuids().map(str),
    _near_valid(),
    st.just(""),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=250),
    st.lists(valid_ids, min_size=2, max_size=3).map(", ".join),  # a repeated header, joined
)

#: ``ACCEPTED_HEADER_NAMES`` as SPEC §1 spells it.
ACCEPT_DEFAULT = ("X-Session-Id", "X-TraceCtrl-Session", "Mirascope-Session-Id")
HEADER_NAME_OPTIONS = ("X-Session-Id", "X-Request-Id")
ACCEPT_OPTIONS: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("X-Request-Id", "Mirascope-Session-Id"),
    ("X-TraceCtrl-Session", "x-session-id"),
)
#: Every inbound name the options above can accept, plus ``baggage`` and a bystander.
INBOUND_NAMES = (
    "x-session-id",
    "x-tracectrl-session",
    "mirascope-session-id",
    "x-request-id",
    "baggage",
    "user-agent",
)


@dataclass(frozen=True)
class Inbound:
    """One inbound header: lower-case name, raw value, and what it means as baggage."""

    name: str
    value: bytes
    #: For a ``baggage`` header built from members: the decoded ``session.id``
    #: values it holds. ``None`` for arbitrary bytes, whose meaning is not modelled.
    session_members: tuple[str, ...] | None = None

    @property
    def text(self) -> str:
        return self.value.decode("latin-1")


@st.composite
def _baggage(draw: st.DrawFn) -> Inbound:
    """A well-formed W3C ``baggage`` header: members ``key=percent-encoded-value[;prop]``."""
    ows = st.sampled_from(["", " ", "\t", "  "])
    members: list[str] = []
    session_values: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(["session.id", "user", "Session.Id", "session.idx"]))
        value = draw(st.one_of(valid_ids, _near_valid(), st.text(max_size=30)))
        prop = draw(st.sampled_from(["", ";prop", ";p=1;q"]))
        members.append(
            f"{draw(ows)}{key}{draw(ows)}={draw(ows)}{quote(value, safe='')}{prop}{draw(ows)}"
        )
        if key == "session.id":
            session_values.append(value)
    return Inbound("baggage", ",".join(members).encode("ascii"), tuple(session_values))


_raw_values = st.one_of(
    valid_ids.map(str.encode),
    latin1_values.map(lambda s: s.encode("latin-1")),
    st.binary(max_size=250),
)
_named = st.builds(Inbound, st.sampled_from(INBOUND_NAMES), _raw_values)
inbound_headers = st.lists(st.one_of(_named, _baggage()), max_size=6)


def priority_names(header_name: str, accept_headers: tuple[str, ...] | None) -> list[str]:
    """The inbound names in priority order, lower-case, as SPEC §3 defines them."""
    names = [header_name, *ACCEPT_DEFAULT] if accept_headers is None else list(accept_headers)
    ordered: list[str] = []
    for name in names:
        if name.lower() not in ordered:
            ordered.append(name.lower())
    return ordered


@dataclass(frozen=True)
class Outcome:
    """What the middleware must do with a request's inbound headers."""

    #: The inbound id it must continue, or ``None`` when it must generate one.
    continued: str | None
    #: Inbound values it must not echo (they were refused).
    refused: tuple[str, ...] = ()
    #: ``False`` when the inputs are outside the model; only the invariants apply.
    modelled: bool = True


def expected_outcome(headers: list[Inbound], names: list[str]) -> Outcome:
    """The first accepted name present decides; ``baggage`` counts only without any."""
    for name in names:
        found = [h for h in headers if h.name == name]
        if not found:
            continue
        if len(found) == 1 and follows_id_rule(found[0].text):
            return Outcome(found[0].text)
        return Outcome(None, tuple(h.text for h in found))
    baggage = [h for h in headers if h.name == "baggage"]
    members: list[str] = []
    for header in baggage:
        if header.session_members is None:
            return Outcome(None, modelled=False)
        members.extend(header.session_members)
    if not members:
        return Outcome(None)
    if len(members) > 1:
        # Several session.id members: the spec leaves this open.
        return Outcome(None, modelled=False)
    if follows_id_rule(members[0]):
        return Outcome(members[0])
    return Outcome(None, (members[0],))
