"""Hypothesis strategies for hostile HTTP input: what a broken or malicious client sends.

Values mix real ones (the test server's client ids, tokens, URLs), slightly broken real ones and
junk: unicode, control characters, NUL, lone surrogates, huge strings, JSON in the wrong place.
Bodies come well encoded, badly encoded (raw ``&``/``=``/``%``, invalid UTF-8) or cut short;
headers come duplicated, empty, huge, or with the wrong content type. JWT-shaped values (DPoP
proofs, bearer tokens) are real ES256 signatures over hostile headers and claims, or wrecks of
them, so the checks behind the signature are reached too.
"""

from __future__ import annotations

import base64
import json
import os
import time
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import IN_CI

settings.register_profile(
    "gatehouse-fuzz",
    max_examples=int(os.environ.get("GATEHOUSE_FUZZ_EXAMPLES") or (2000 if IN_CI else 200)),
    deadline=None,
    derandomize=IN_CI,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
#: The fuzz tests' settings: 2,000 examples per endpoint in CI (derandomized, so a failure
#: reproduces), 200 locally; GATEHOUSE_FUZZ_EXAMPLES overrides both.
FUZZ = settings(settings.get_profile("gatehouse-fuzz"))

INTERESTING = [
    "", " ", "\x00", "a\x00b", "\r\n", "\t", "%", "%zz", "%E2%82", "%00", "&", "=", "+", "'", '"', "\\", "\u202e", "\ufeff",
    "\U0001f600", "é", "null", "[]", "{}", "true", "-1", "0", "1e999", "9" * 40, "<script>alert(1)</script>",
    "../../etc/passwd", "javascript:alert(1)", "http://127.0.0.1:9/callback#frag", "https://user@evil.example/",
    "data:text/html,x", "urn:ietf:params:oauth:grant-type:jwt-bearer", "S256", "plain", "code", "token", "none", "Bearer",
    "\ud800",  # an unpaired surrogate: sent as a JSON escape or as (invalid) surrogatepass bytes
]
_PRINTABLE_LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f")


def junk_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(INTERESTING),
        st.text(max_size=40),
        st.text(st.characters(codec="utf-8"), max_size=12),
        st.integers(1_000, 70_000).map(lambda n: "A" * n),
    )


def mutated(value: str) -> st.SearchStrategy[str]:
    """``value`` cut, extended, or with one character changed."""
    return st.one_of(
        st.integers(0, max(len(value) - 1, 0)).map(lambda i: value[:i]),
        junk_text().map(lambda extra: value + extra),
        st.tuples(st.integers(0, max(len(value) - 1, 0)), st.characters()).map(
            lambda pair: value[: pair[0]] + pair[1] + value[pair[0] + 1 :]
        ),
    )


def values(*known: str) -> st.SearchStrategy[str]:
    """A parameter value: a real one, a broken real one, or junk."""
    if not known:
        return junk_text()
    real = st.sampled_from(known)
    return st.one_of(real, real.flatmap(mutated), junk_text())


@st.composite
def near(draw, valid: list[tuple[str, object]], fields: dict[str, st.SearchStrategy]) -> list[tuple[str, object]]:
    """``valid`` (name, value) pairs after up to four changes: a value replaced (by one of its
    field's, real or hostile), a pair dropped or repeated, a junk pair added. Most requests of a
    real attack look like this: nearly right, so they get past the first checks."""
    pairs = list(valid)
    for _ in range(draw(st.integers(0, 4))):
        change = draw(st.sampled_from(["replace", "replace", "drop", "repeat", "add"]))
        if change == "add" or not pairs:
            name = draw(st.one_of(st.sampled_from(sorted(fields)), junk_text().filter(lambda s: len(s) < 200)))
            pairs.insert(draw(st.integers(0, len(pairs))), (name, draw(fields.get(name, junk_text()))))
            continue
        index = draw(st.integers(0, len(pairs) - 1))
        name = pairs[index][0]
        if change == "drop":
            del pairs[index]
        elif change == "repeat":
            pairs.insert(index, (name, draw(fields.get(name, junk_text()))))
        else:
            pairs[index] = (name, draw(fields.get(name, junk_text())))
    return pairs


def params(fields: dict[str, st.SearchStrategy[str]], *valid: list[tuple[str, str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Parameter pairs: one of the ``valid`` sets, nearly unchanged; or some of ``fields`` with
    their values, unknown names and repeated names, anyhow."""
    known = st.sampled_from(sorted(fields)).flatmap(lambda name: fields[name].map(lambda value: (name, value)))
    unknown = st.tuples(junk_text().filter(lambda s: len(s) < 200), junk_text())
    anyhow = st.lists(st.one_of(known, known, known, unknown), max_size=12)
    if not valid:
        return anyhow
    nearly = st.sampled_from(valid).flatmap(lambda pairs: near(pairs, fields))
    return st.one_of(nearly, nearly, nearly, anyhow)


def _raw_join(pairs: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")


def form_bodies(fields: dict[str, st.SearchStrategy[str]], *valid: list[tuple[str, str]]) -> st.SearchStrategy[bytes]:
    """``application/x-www-form-urlencoded`` bodies (see :func:`params`), well or badly encoded, or cut short."""
    pairs = params(fields, *valid)
    encoded = pairs.map(lambda p: urlencode(p, encoding="utf-8", errors="surrogatepass").encode("ascii"))
    return st.one_of(
        encoded,
        encoded,
        encoded,
        pairs.map(_raw_join),
        st.binary(max_size=300),
        st.tuples(encoded, st.floats(0, 1)).map(lambda pair: pair[0][: int(len(pair[0]) * pair[1])]),
    )


def query_strings(fields: dict[str, st.SearchStrategy[str]], *valid: list[tuple[str, str]]) -> st.SearchStrategy[str]:
    """A URL query (without ``?``, see :func:`params`): percent-encoded, or raw with stray ``%`` and ``&``."""
    pairs = params(fields, *valid).map(lambda p: [(k[:2000], v[:4000]) for k, v in p])
    encoded = pairs.map(lambda p: urlencode(p, encoding="utf-8", errors="surrogatepass"))
    return st.one_of(
        encoded,
        encoded,
        pairs.map(lambda p: quote(_raw_join(p).decode("utf-8", "surrogatepass"), safe="&=%", errors="surrogatepass")),
    )


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30), junk_text())


def json_values() -> st.SearchStrategy[object]:
    return st.recursive(
        JSON_SCALARS,
        lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)),
        max_leaves=20,
    )


def json_bodies(fields: dict[str, st.SearchStrategy[object]], *valid: dict) -> st.SearchStrategy[bytes]:
    """JSON bodies: one of the ``valid`` objects nearly unchanged (see :func:`near`), objects mixing
    ``fields`` with junk members, other JSON values, broken JSON, unpaired surrogate escapes, deep nesting."""
    members = st.fixed_dictionaries({}, optional={name: st.one_of(strategy, json_values()) for name, strategy in fields.items()})
    objects = st.tuples(members, st.dictionaries(st.text(max_size=12), json_values(), max_size=4)).map(lambda p: {**p[1], **p[0]})
    if valid:
        nearly = st.sampled_from(valid).flatmap(lambda obj: near(list(obj.items()), fields)).map(dict)
        objects = st.one_of(nearly, nearly, nearly, objects)
    dumped = objects.map(lambda o: json.dumps(o).encode())
    return st.one_of(
        dumped,
        dumped,
        dumped,
        json_values().map(lambda v: json.dumps(v).encode()),
        st.tuples(dumped, st.floats(0, 1)).map(lambda pair: pair[0][: int(len(pair[0]) * pair[1])]),
        dumped.map(lambda raw: raw.replace(b'"', b'"\\ud800', 1)),
        st.integers(10, 5_000).map(lambda n: b'{"a":' + b"[" * n + b"]" * n + b"}"),
        st.binary(max_size=200),
    )


def header_values() -> st.SearchStrategy[str]:
    """Header values httpx can send: printable Latin-1, up to 8 KB (longer ones are uvicorn's to refuse)."""
    return st.one_of(
        st.sampled_from(["", " ", "x", "null", "é", "\xff" * 10]),
        st.text(_PRINTABLE_LATIN1, max_size=60),
        st.integers(100, 8_000).map(lambda n: "B" * n),
    )


FORM = "application/x-www-form-urlencoded"


def content_types(right: str) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.just(right),
        st.just(right),
        st.sampled_from([None, f"{right}; charset=utf-8", f"{right}; charset=latin-1", right.upper(), "text/plain",
                         "application/json" if right == FORM else FORM, "multipart/form-data; boundary=x", "*/*", ";;", ""]),
        header_values(),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_basic(client_id: str, secret: str) -> str:
    """``Authorization: Basic`` as RFC 6749 section 2.3.1 has it: each part form-urlencoded first."""
    return "Basic " + _b64(f"{quote(client_id, safe='', errors='surrogatepass')}:{quote(secret, safe='', errors='surrogatepass')}".encode())


def basic_authorizations(*credentials: tuple[str, str]) -> st.SearchStrategy[str]:
    """``Authorization`` values for HTTP Basic client authentication, real and broken."""
    pairs = st.sampled_from(credentials) if credentials else st.tuples(junk_text(), junk_text())
    good_id = pairs.flatmap(lambda p: st.tuples(st.just(p[0]), values(p[1])))
    return st.one_of(
        pairs.map(lambda p: encode_basic(*p)),
        good_id.map(lambda p: encode_basic(*p)),
        st.tuples(junk_text(), junk_text()).map(lambda p: "Basic " + _b64(f"{p[0]}:{p[1]}".encode("utf-8", "surrogatepass"))),
        st.binary(max_size=60).map(lambda raw: "Basic " + _b64(raw)),
        header_values().map(lambda v: "Basic " + v),
        st.sampled_from(["Basic", "Basic ", "basic Og==", "Basic ====", "Basic Zm9v", "Basic %00", "Basic YTpi:", "Bearer x",
                         "Basic " + _b64(b"%00:%00"), "Basic " + _b64(b"a%zz:b"), "Basic " + _b64(b"\xff\xfe:\x00")]),
    )


_SIGNING_KEY = ECKey.generate_key("P-256")
PUBLIC_JWK = _SIGNING_KEY.as_dict(private=False)
CLAIM_VALUES = st.one_of(JSON_SCALARS, st.just(int(time.time())), st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _signed(header_and_claims: tuple[dict, dict]) -> str:
    header, claims = header_and_claims
    claims = json.loads(json.dumps(claims, ensure_ascii=False).encode("utf-8", "replace"))  # signable: no lone surrogates
    return jwt.encode({**header, "alg": "ES256"}, claims, _SIGNING_KEY, algorithms=["ES256"])


def jwts(typ: str, claim_names: list[str], *known: str) -> st.SearchStrategy[str]:
    """JWT-shaped values: ES256-signed with hostile headers and claims, wrecked real ones, or junk."""
    public, private = PUBLIC_JWK, _SIGNING_KEY.as_dict(private=True)
    headers = st.fixed_dictionaries(
        {"alg": st.sampled_from(["ES256", "ES256", "none", "HS256", "RS256", "EdDSA", ""])},
        optional={"typ": st.one_of(st.just(typ), CLAIM_VALUES), "jwk": st.one_of(st.just(public), CLAIM_VALUES), "kid": CLAIM_VALUES},
    )
    signable = st.fixed_dictionaries(
        {"typ": st.one_of(st.just(typ), st.text(max_size=10))},
        optional={"jwk": st.sampled_from([public, private]), "kid": st.text(max_size=10)},
    )
    claims = st.fixed_dictionaries({}, optional={name: CLAIM_VALUES for name in claim_names})
    signed = st.tuples(signable, claims).map(_signed)
    unsigned = st.tuples(headers, claims, st.sampled_from(["", "AAAA", "x" * 86])).map(
        lambda hcs: f"{_segment(hcs[0])}.{_segment(hcs[1])}.{hcs[2]}"
    )
    shapes = [signed, unsigned, signed.flatmap(mutated), st.sampled_from(["", ".", "..", "a.b.c", "a.b", "e30.e30.", "e30.e30"])]
    if known:
        shapes.append(values(*known))
    return st.one_of(*shapes)
