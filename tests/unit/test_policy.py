"""Policy: which scopes a JSON-RPC request needs (RS-6), implication, and policy files."""

from __future__ import annotations

import pytest

from gatehouse.guard.policy import Policy, PolicyError

POLICY = Policy(
    tools={"add_note": ["notes:write"], "admin_reset": ["notes:admin", "notes:write"], "*": ["notes:read"]},
    methods={"resources/read": ["files:read"], "tools/call": ["mcp:call"]},
    default=["mcp:use"],
    implies={"notes:admin": ["notes:write"], "notes:write": ["notes:read"]},
)


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("initialize", None, ["mcp:use"]),
        ("tools/list", {}, ["mcp:use"]),
        (None, None, ["mcp:use"]),
        ("resources/read", {"uri": "x"}, ["mcp:use", "files:read"]),
        ("tools/call", {"name": "add_note"}, ["mcp:use", "mcp:call", "notes:write"]),
        ("tools/call", {"name": "admin_reset"}, ["mcp:use", "mcp:call", "notes:admin", "notes:write"]),
        ("tools/call", {"name": "unlisted_tool"}, ["mcp:use", "mcp:call", "notes:read"]),  # wildcard
        ("tools/call", {"name": 42}, ["mcp:use", "mcp:call", "notes:read"]),  # not a name: wildcard, never nothing
        ("tools/call", "garbage", ["mcp:use", "mcp:call", "notes:read"]),
        ("tools/call", None, ["mcp:use", "mcp:call", "notes:read"]),
    ],
)
def test_required(method, params, expected):
    assert list(POLICY.required(method, params)) == expected


def test_required_has_no_duplicates():
    policy = Policy(tools={"t": ["a", "a", "b"]}, methods={"tools/call": ["a"]}, default=["b"])
    assert policy.required("tools/call", {"name": "t"}) == ("b", "a")


def test_no_wildcard_means_unnamed_tools_need_only_the_default():
    policy = Policy(tools={"add_note": ["notes:write"]}, default=["notes:read"])
    assert policy.required("tools/call", {"name": "other"}) == ("notes:read",)
    assert Policy().required("tools/call", {"name": "x"}) == ()


def test_expand_is_transitive_and_survives_cycles():
    assert POLICY.expand(["notes:admin"]) == {"notes:admin", "notes:write", "notes:read"}
    assert POLICY.expand(["notes:read"]) == {"notes:read"}
    assert POLICY.expand([]) == set()
    cyclic = Policy(implies={"a": ["b"], "b": ["a", "c"]})
    assert cyclic.expand(["a"]) == {"a", "b", "c"}


def test_missing_honours_the_hierarchy_one_way_only():
    assert POLICY.missing(["notes:write"], ["notes:read"]) == []
    assert POLICY.missing(["notes:admin"], ["notes:read", "notes:write"]) == []
    assert POLICY.missing(["notes:read"], ["notes:read", "notes:write"]) == ["notes:write"]
    assert POLICY.missing([], ["x", "y"]) == ["x", "y"]  # in order, every one of them
    assert POLICY.missing(["notes:read"], []) == []


def test_missing_does_not_match_prefixes_or_case():
    assert POLICY.missing(["notes"], ["notes:read"]) == ["notes:read"]
    assert POLICY.missing(["NOTES:READ"], ["notes:read"]) == ["notes:read"]
    assert POLICY.missing(["notes:read:extra"], ["notes:read"]) == ["notes:read"]


def test_may_call():
    assert POLICY.may_call(["mcp:use", "notes:write"], "add_note")
    assert not POLICY.may_call(["mcp:use", "notes:read"], "add_note")
    assert not POLICY.may_call(["notes:write"], "add_note")  # the default is needed too
    assert POLICY.may_call(["mcp:use", "notes:read"], "anything_else")  # wildcard
    assert POLICY.may_call(["mcp:use", "notes:admin"], "admin_reset")  # admin implies write
    assert not POLICY.may_call(["mcp:use", "notes:write"], "admin_reset")


def test_empty_policy_allows_everything():
    assert Policy().may_call([], "anything")
    assert Policy().missing([], Policy().required("tools/call", {"name": "x"})) == []


def write(tmp_path, text: str):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_from_toml_good_file(tmp_path):
    path = write(tmp_path, '''
default = ["notes:read"]
implies = { "notes:write" = ["notes:read"] }

[tools]
add_note = ["notes:write"]
"*" = ["notes:read"]

[methods]
"resources/read" = ["notes:read"]
''')
    policy = Policy.from_toml(path)
    assert policy == Policy(
        tools={"add_note": ["notes:write"], "*": ["notes:read"]},
        methods={"resources/read": ["notes:read"]},
        default=["notes:read"],
        implies={"notes:write": ["notes:read"]},
    )
    assert policy.may_call(["notes:write"], "add_note") and not policy.may_call(["notes:read"], "add_note")


def test_from_toml_empty_file(tmp_path):
    assert Policy.from_toml(write(tmp_path, "")) == Policy()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('default = ["a"]\ntool = {}\n', "unknown key(s) tool"),
        ('default = "notes:read"\n', "default must be a list of scope names"),
        ('default = ["two words"]\n', "default must be a list of scope names without spaces"),
        ('default = [""]\n', "default must be a list"),
        ('default = [1]\n', "default must be a list"),
        ('tools = ["a"]\n', "[tools] must be a table"),
        ('[tools]\nadd_note = "notes:write"\n', "tools.add_note must be a list"),
        ('[methods]\n"tools/call" = [["x"]]\n', "methods.tools/call must be a list"),
        ('implies = { a = "b" }\n', "implies.a must be a list"),
        ("default = [", "cannot read the policy file"),
    ],
)
def test_from_toml_bad_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # says which file


def test_from_toml_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        Policy.from_toml(tmp_path / "nope.toml")


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


def test_every_scope_names_each_scope_of_the_policy_once():
    assert POLICY.every_scope == ("mcp:use", "notes:write", "notes:admin", "notes:read", "files:read", "mcp:call")
    assert Policy().every_scope == ()


@pytest.mark.parametrize(
    ("granted", "everything"),
    [
        ({"mcp:use", "mcp:call", "files:read", "notes:admin"}, True),  # notes:admin implies write, write implies read
        ({"mcp:use", "mcp:call", "files:read", "notes:write"}, False),  # no notes:admin
        ({"mcp:use", "mcp:call", "notes:admin"}, False),  # no files:read, needed only by resources/read
        (set(), False),
    ],
)
def test_grants_everything_only_when_no_request_could_need_more(granted, everything):
    """The guard lets a request through without reading its body only on this answer (RS-6)."""
    assert POLICY.grants_everything(frozenset(granted)) is everything
    assert Policy().grants_everything(frozenset()) is True
