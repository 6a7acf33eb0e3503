"""The rule language: parsing, errors, printing and evaluation (paygate.fraud.rules_lang,
paygate.fraud.rules_eval), with property tests against an independent reference evaluator."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from paygate.fraud.attributes import CATALOGUE
from paygate.fraud.rules_eval import compile_rule
from paygate.fraud.rules_lang import (
    MAX_DEPTH,
    And,
    Attr,
    Compare,
    InList,
    Lit,
    Node,
    Not,
    Or,
    RuleSyntaxError,
    Truth,
    list_names,
    parse,
    unparse,
)

LISTS = {"bad_emails": "email", "bad_cards": "card_fingerprint", "bad_ips": "ip_address"}
LISTS |= {"bad_bins": "card_bin"}


def error_of(text: str, lists: Mapping[str, str] | None = None) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as info:
        parse(text, lists)
    return info.value


# --- parsing and errors --------------------------------------------------------------------


def test_the_examples_parse_to_the_expected_trees() -> None:
    assert parse("amount > 100000 and card_country != ip_country") == And(
        Compare(">", Attr("amount"), Lit(100000)),
        Compare("!=", Attr("card_country"), Attr("ip_country")),
    )
    assert parse("email in @bad_emails", LISTS) == InList(Attr("email"), "bad_emails")
    assert parse("card_bin NOT IN @bad_bins or not (currency == 'USD')", LISTS) == Or(
        InList(Attr("card_bin"), "bad_bins", negated=True),
        Not(Compare("==", Attr("currency"), Lit("usd"))),
    )
    assert parse("is_weekend and not is_weekend == false") == And(
        Truth(Attr("is_weekend")), Not(Compare("==", Attr("is_weekend"), Lit(False)))
    )


def test_and_binds_tighter_than_or_and_both_associate_left() -> None:
    a, b, c = (Compare("==", Attr("amount"), Lit(n)) for n in (1, 2, 3))
    assert parse("amount == 1 or amount == 2 and amount == 3") == Or(a, And(b, c))
    assert parse("amount == 1 and amount == 2 and amount == 3") == And(And(a, b), c)
    assert parse("amount == 1 and (amount == 2 and amount == 3)") == And(a, And(b, c))
    assert unparse(And(a, And(b, c))) == "amount == 1 and (amount == 2 and amount == 3)"
    assert unparse(Not(Or(a, b))) == "not (amount == 1 or amount == 2)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("amout > 100", "unknown attribute 'amout' at 1; did you mean 'amount'?"),
        ("amount > 1 and emial == 'x'", "unknown attribute 'emial' at 16; did you mean 'email'?"),
        ("currency == 1", "type mismatch at 10: currency is a string, compared with an integer"),
        ("amount == 'x'", "type mismatch at 8: amount is an integer, compared with a string"),
        ("email < 'b'", "'<' at 7 compares integers only; email is a string: use == or !="),
        (
            "(amount > 1",
            "expected ')' at 12 to close the '(' at 1, found the end of the expression",
        ),
        ("amount > 1)", "expected 'and' or 'or' at 11, found ')'"),
        ("amount > 1 amount", "expected 'and', 'or' or ')' at 12, found 'amount'"),
        ("amount", "expected a comparison operator or 'in' at 7, found the end of the expression"),
        ("1 == 1", "a comparison needs an attribute at 1"),
        ("amount = 1", "unexpected '=' at 8; did you mean '=='?"),
        ("amount > 1 && x", "unexpected character '&' at 12"),
        ("email == 'abc", "unterminated string starting at 10"),
        ("email == 'a\\n'", "unknown escape at 12: only \\\\, \\' and \\\" are allowed"),
        (
            "amount in @x",
            "amount at 1 cannot be looked up in a list; lists hold card_fingerprint, "
            "card_bin, email or ip_address values",
        ),
        (
            "amount >",
            "expected an attribute, a literal or '(' at 9, found the end of the expression",
        ),
        ("", "expected an attribute, a literal or '(' at 1, found the end of the expression"),
        ("amount > 1234567890123456789", "integer too long at 10: at most 18 digits"),
    ],
)
def test_errors_say_where_and_what_was_expected(text: str, message: str) -> None:
    assert error_of(text).message == message


def test_lists_must_exist_and_hold_the_attribute_kind() -> None:
    assert error_of("email in @nope", LISTS).message == "unknown list '@nope' at 10"
    assert (
        error_of("email in @bad_cards", LISTS).message
        == "list '@bad_cards' at 10 holds card_fingerprint values, not email"
    )
    assert parse("email in @anything") == InList(Attr("email"), "anything")  # lists unchecked


def test_nesting_is_bounded_with_the_parsers_own_error() -> None:
    assert error_of("(" * 200 + "is_weekend" + ")" * 200).message.startswith(
        "expression nested too deeply"
    )
    assert error_of("not " * 100 + "is_weekend").message.startswith("expression nested too deeply")
    deep = "(" * (MAX_DEPTH - 1) + "is_weekend" + ")" * (MAX_DEPTH - 1)
    assert parse(deep) == Truth(Attr("is_weekend"))
    assert error_of(" or ".join(["is_weekend"] * 65)).message.startswith("too many conditions")


def test_errors_never_repeat_a_card_number() -> None:
    err = error_of("x4242424242424242 == 1")
    assert "4242424242424242" not in err.message
    err = error_of("email == '4242424242424242' and")
    assert "4242424242424242" not in err.message


# --- evaluation ----------------------------------------------------------------------------


def test_evaluation_of_the_examples() -> None:
    rule = compile_rule(parse("amount > 100000 and card_country != ip_country"))
    assert rule({"amount": 100001, "card_country": "US", "ip_country": "DE"})
    assert not rule({"amount": 100001, "card_country": "US", "ip_country": "US"})
    assert not rule({"amount": 100000, "card_country": "US", "ip_country": "DE"})
    assert not rule({"amount": 100001, "card_country": "US"})  # unknown IP country: false
    listed = compile_rule(parse("email in @bad_emails"), {"bad_emails": frozenset({"a@b.co"})})
    assert listed({"email": "a@b.co"}) and not listed({"email": "c@b.co"}) and not listed({})
    neg = compile_rule(parse("email not in @bad_emails"), {"bad_emails": frozenset({"a@b.co"})})
    assert neg({"email": "c@b.co"}) and not neg({"email": "a@b.co"}) and not neg({})
    # A missing value makes the comparison false; `not` then inverts it.
    assert compile_rule(parse("not (currency == 'usd')"))({})
    assert not compile_rule(parse("total_payments_per_card_hourly > 5"))({"amount": 1})
    assert compile_rule(parse("total_payments_per_card_hourly > 5"))(
        {"total_payments_per_card_hourly": 6}
    )
    # A value of another type than the catalogue's counts as missing, never raises.
    assert not compile_rule(parse("amount > 5"))({"amount": "9"})
    assert not compile_rule(parse("is_weekend"))({"is_weekend": 1})


# --- properties ----------------------------------------------------------------------------

NAMES = {kind: sorted(n for n, k in LISTS.items() if k == kind) for kind in set(LISTS.values())}
BY_TYPE = {t: sorted(n for n, a in CATALOGUE.items() if a.type is t) for t in (int, str, bool)}
LISTABLE = sorted(n for n, a in CATALOGUE.items() if a.list_kind)
SMALL_STRINGS = ["", "a", "B", "usd", "US", "visa", "x@y.co"]


def literal(kind: type, strings: st.SearchStrategy[str], ints: st.SearchStrategy[int]) -> Any:
    if kind is int:
        return ints
    if kind is bool:
        return st.booleans()
    return strings


@st.composite
def comparisons(draw: st.DrawFn, strings: Any, ints: Any) -> Node:
    kind = draw(st.sampled_from([int, str, bool]))
    name = draw(st.sampled_from(BY_TYPE[kind]))
    attribute = CATALOGUE[name]
    ops = ["==", "!=", "<", "<=", ">", ">="] if kind is int else ["==", "!="]
    op = draw(st.sampled_from(ops))
    if draw(st.booleans()):
        other: Attr | Lit = Attr(draw(st.sampled_from(BY_TYPE[kind])))
    else:
        value = draw(literal(kind, strings, ints))
        other = Lit(attribute.normalize(value) if kind is str else value)
    if draw(st.booleans()):
        return Compare(op, Attr(name), other)
    if isinstance(other, Lit):
        return Compare(op, other, Attr(name))
    return Compare(op, other, Attr(name))


@st.composite
def memberships(draw: st.DrawFn) -> Node:
    name = draw(st.sampled_from(LISTABLE))
    lists = NAMES[CATALOGUE[name].list_kind or ""]
    return InList(Attr(name), draw(st.sampled_from(lists)), draw(st.booleans()))


def expressions(strings: Any = None, ints: Any = None) -> st.SearchStrategy[Node]:
    strings = strings if strings is not None else st.text(max_size=12)
    ints = ints if ints is not None else st.integers(-(10**18) + 1, 10**18 - 1)
    leaves = st.one_of(
        comparisons(strings, ints), memberships(), st.just(Truth(Attr("is_weekend")))
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            children.map(Not),
            st.builds(And, children, children),
            st.builds(Or, children, children),
        ),
        max_leaves=12,
    )


def depth(node: Node) -> int:
    if isinstance(node, Not):
        return 1 + depth(node.operand)
    if isinstance(node, And | Or):
        return 1 + max(depth(node.left), depth(node.right))
    return 0


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_printed_expressions_parse_back_to_the_same_tree(node: Node) -> None:
    assume(depth(node) < MAX_DEPTH // 2)
    text = unparse(node)
    assert parse(text, LISTS) == node
    assert unparse(parse(text)) == text


_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt}
_OPS |= {"<=": operator.le, ">": operator.gt, ">=": operator.ge}


def reference(node: Node, attrs: Mapping[str, Any], lists: Mapping[str, frozenset[str]]) -> bool:
    """The semantics, as plainly as they can be written."""
    if isinstance(node, Compare):
        values = []
        for side in (node.left, node.right):
            if isinstance(side, Lit):
                values.append(side.value)
            elif side.name in attrs and type(attrs[side.name]) is CATALOGUE[side.name].type:
                values.append(attrs[side.name])
            else:
                return False
        return bool(_OPS[node.op](values[0], values[1]))
    if isinstance(node, InList):
        value = attrs.get(node.attr.name)
        if not isinstance(value, str):
            return False
        inside = value in lists.get(node.list_name, frozenset())
        return not inside if node.negated else inside
    if isinstance(node, Truth):
        return attrs.get(node.attr.name) is True
    if isinstance(node, Not):
        return not reference(node.operand, attrs, lists)
    if isinstance(node, And):
        return reference(node.left, attrs, lists) and reference(node.right, attrs, lists)
    assert isinstance(node, Or)
    return reference(node.left, attrs, lists) or reference(node.right, attrs, lists)


SMALL = st.sampled_from(SMALL_STRINGS)
TINY_INTS = st.integers(-2, 2)


@st.composite
def attribute_dicts(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, attribute in CATALOGUE.items():
        if draw(st.integers(0, 4)) == 0:
            continue  # missing
        out[name] = draw(literal(attribute.type, SMALL, TINY_INTS))
    if draw(st.booleans()):
        out["amount"] = "12"  # a wrong type, as if a caller erred: counts as missing
    return out


LIST_ITEMS = st.dictionaries(
    st.sampled_from(sorted(LISTS)), st.frozensets(SMALL, max_size=3), max_size=4
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(SMALL, TINY_INTS), attribute_dicts(), LIST_ITEMS)
def test_compiled_rules_agree_with_the_reference(
    node: Node, attrs: dict[str, Any], lists: dict[str, frozenset[str]]
) -> None:
    assert compile_rule(node, lists)(attrs) == reference(node, attrs, lists)
    assert list_names(node) <= set(LISTS)


TOKENS = [
    "amount",
    "email",
    "is_weekend",
    "currency",
    "(",
    ")",
    "and",
    "or",
    "not",
    "in",
    "@bad_emails",
    "==",
    "!=",
    "<",
    ">=",
    "'x'",
    '"y',
    "1",
    "-2",
    "true",
    "@",
    "=",
    "!",
    "\\",
    "'",
    "ématte",
    "9" * 30,
]


@settings(max_examples=600)
@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
        st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    )
)
def test_garbage_raises_only_the_parsers_error(text: str) -> None:
    try:
        node = parse(text, LISTS)
    except RuleSyntaxError as exc:
        assert 1 <= exc.position <= len(text) + 1
        assert f"at {exc.position}" in exc.message
    else:
        assert parse(unparse(node), LISTS) == node
