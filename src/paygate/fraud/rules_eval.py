"""Rule evaluation, pure: a parsed expression (paygate.fraud.rules_lang) compiled once to nested
closures, then called per payment with its attribute dict.

A comparison whose attribute is missing (or holds a value of another type than the catalogue's)
is false, and so is `x in @list` and `x not in @list` for a missing `x`; `not` then inverts as
usual. Chains of `and`/`or` are flattened and short-circuit.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from paygate.fraud.attributes import CATALOGUE
from paygate.fraud.rules_lang import And, Attr, Compare, InList, Lit, Node, Not, Operand, Or, Truth

Predicate = Callable[[Mapping[str, Any]], bool]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MISSING = object()


def compile_rule(node: Node, lists: Mapping[str, frozenset[str]] | None = None) -> Predicate:
    """A predicate over attribute dicts. `lists` maps each list the expression names to its
    items (a list not given is empty)."""
    lists = lists or {}
    if isinstance(node, Compare):
        return _compare(node)
    if isinstance(node, InList):
        return _member(node, lists.get(node.list_name, frozenset()))
    if isinstance(node, Truth):
        name = node.attr.name
        return lambda attrs: attrs.get(name) is True
    if isinstance(node, Not):
        inner = compile_rule(node.operand, lists)
        return lambda attrs: not inner(attrs)
    parts = [compile_rule(n, lists) for n in _flatten(node, type(node))]
    if isinstance(node, And):
        return lambda attrs: all(p(attrs) for p in parts)
    return lambda attrs: any(p(attrs) for p in parts)


def _flatten(node: Node, kind: type) -> list[Node]:
    # Iterative, so that a long chain never recurses deeply.
    out: list[Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if type(n) is kind:
            assert isinstance(n, And | Or)
            stack += [n.right, n.left]
        else:
            out.append(n)
    return out


def _reader(o: Operand) -> Callable[[Mapping[str, Any]], Any]:
    if isinstance(o, Lit):
        value = o.value
        return lambda attrs: value
    name = o.name
    kind = CATALOGUE[name].type

    def read(attrs: Mapping[str, Any]) -> Any:
        value = attrs.get(name, _MISSING)
        return value if type(value) is kind else _MISSING

    return read


def _compare(node: Compare) -> Predicate:
    op = _OPS[node.op]
    left, right = node.left, node.right
    if isinstance(left, Attr) and isinstance(right, Lit):
        name, kind, constant = left.name, CATALOGUE[left.name].type, right.value

        def attr_vs_literal(attrs: Mapping[str, Any]) -> bool:
            value = attrs.get(name, _MISSING)
            return type(value) is kind and op(value, constant)

        return attr_vs_literal
    read_left, read_right = _reader(left), _reader(right)

    def general(attrs: Mapping[str, Any]) -> bool:
        a, b = read_left(attrs), read_right(attrs)
        return a is not _MISSING and b is not _MISSING and op(a, b)

    return general


def _member(node: InList, items: frozenset[str]) -> Predicate:
    name, negated = node.attr.name, node.negated

    def member(attrs: Mapping[str, Any]) -> bool:
        value = attrs.get(name)
        if type(value) is not str:
            return False
        return (value in items) != negated

    return member
