"""Parsing ``WWW-Authenticate`` (RFC 9110 section 11.6.1, RFC 6750 section 3).

A field holds one or more challenges, and a response may carry several fields::

    challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param = token BWS "=" BWS ( token / quoted-string )

Parameter names are case-insensitive; RFC 6750 section 3 forbids a parameter appearing twice
in one Bearer challenge. The parser records syntax problems instead of raising, so the doctor
can say exactly where a header goes wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*(\"(?:[^\"\\]|\\.)*\"|{_TOKEN})")
_SCHEME = re.compile(_TOKEN)
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(,|$))")
_SPACE = re.compile(r"[ \t]*")


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None

    def get(self, name: str) -> str | None:
        return self.params.get(name.lower())


@dataclass
class ParsedChallenges:
    challenges: list[Challenge]
    problems: list[str]

    def first(self, scheme: str) -> Challenge | None:
        return next((c for c in self.challenges if c.scheme.lower() == scheme.lower()), None)


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _skip(pattern: re.Pattern, text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match else pos


def parse_field(text: str) -> ParsedChallenges:
    """The challenges in one ``WWW-Authenticate`` field value."""
    challenges: list[Challenge] = []
    problems: list[str] = []
    pos = 0
    current: Challenge | None = None
    while pos < len(text):
        pos = _skip(_SPACE, text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos >= len(text):
            break
        param = _PARAM.match(text, pos)
        if current is not None and param:
            name = param.group(1).lower()
            if name in current.params:
                problems.append(f"parameter {name!r} appears twice in the {current.scheme} challenge (RFC 6750 section 3)")
            current.params[name] = _unquote(param.group(2))
            pos = param.end()
            continue
        scheme = _SCHEME.match(text, pos)
        if not scheme:
            problems.append(f"unexpected {text[pos:pos + 20]!r} at character {pos}")
            break
        current = Challenge(scheme.group(0))
        challenges.append(current)
        pos = scheme.end()
        if pos < len(text) and text[pos] not in " \t,":
            problems.append(f"unexpected {text[pos:pos + 20]!r} after the scheme {current.scheme!r} at character {pos}")
            break
        after = _skip(_SPACE, text, pos)
        if not _PARAM.match(text, after):
            token68 = _TOKEN68.match(text, after)
            if token68:
                current.token68 = token68.group(0)
                pos = token68.end()
    return ParsedChallenges(challenges, problems)


def parse(values: list[str]) -> ParsedChallenges:
    """Every challenge of every ``WWW-Authenticate`` field of a response."""
    challenges: list[Challenge] = []
    problems: list[str] = []
    for value in values:
        parsed = parse_field(value)
        challenges += parsed.challenges
        problems += parsed.problems
    return ParsedChallenges(challenges, problems)
