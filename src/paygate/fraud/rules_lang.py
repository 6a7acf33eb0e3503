"""The fraud rule language, pure: a tokenizer, a recursive-descent parser to a typed AST, and a
printer whose output parses back to the same AST.

A rule is a small boolean expression over a payment's attributes (paygate.fraud.attributes), in
the style of the processors' rule engines:

    amount > 100000 and card_country != ip_country
    email in @blocked_emails or not (currency == 'usd')

Grammar (keywords are case-insensitive; `@name` is one of the merchant's lists):

    expr       := and_expr ('or' and_expr)*
    and_expr   := not_expr ('and' not_expr)*
    not_expr   := 'not' not_expr | primary
    primary    := '(' expr ')' | operand [cmp operand | ['not'] 'in' LIST]
    operand    := ATTRIBUTE | INTEGER | STRING | 'true' | 'false'
    cmp        := '==' | '!=' | '<' | '<=' | '>' | '>='

Types are checked while parsing: both sides of a comparison have one type, `<` and friends
compare integers only, a bare operand must be a boolean attribute, `in @list` takes an attribute
whose kind of list matches. Every refusal is a `RuleSyntaxError` with the 1-based position and
what was expected; messages quote names, never string literals (a literal may hold card data).

    >>> try:
    ...     parse("amout > 100")
    ... except RuleSyntaxError as e:
    ...     print(e)
    unknown attribute 'amout' at 1; did you mean 'amount'?
    >>> print(unparse(parse("amount >= 5000 And (card_brand == \\"VISA\\")")))
    amount >= 5000 and card_brand == 'visa'
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from paygate.fraud.attributes import CATALOGUE, Attribute, Value
from paygate.fraud.rules_tokens import RuleSyntaxError, Token, describe, shown, tokenize

__all__ = ["Node", "RuleSyntaxError", "attribute_names", "list_names", "parse", "unparse"]

MAX_DEPTH = 32  # nesting of parentheses and `not`
MAX_CONDITIONS = 64

# --- the AST -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attr:
    name: str


@dataclass(frozen=True, slots=True)
class Lit:
    value: Value


Operand = Attr | Lit


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class InList:
    attr: Attr
    list_name: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Truth:
    """A boolean attribute on its own: `is_weekend`."""

    attr: Attr


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


Node = Compare | InList | Truth | Not | And | Or


def list_names(node: Node) -> set[str]:
    """The lists an expression refers to."""
    if isinstance(node, InList):
        return {node.list_name}
    if isinstance(node, Not):
        return list_names(node.operand)
    if isinstance(node, And | Or):
        return list_names(node.left) | list_names(node.right)
    return set()


def attribute_names(node: Node) -> set[str]:
    """The attributes an expression reads."""
    if isinstance(node, Compare):
        return {o.name for o in (node.left, node.right) if isinstance(o, Attr)}
    if isinstance(node, InList | Truth):
        return {node.attr.name}
    if isinstance(node, Not):
        return attribute_names(node.operand)
    return attribute_names(node.left) | attribute_names(node.right)


# --- printing ------------------------------------------------------------------------------

_PREC = {Or: 1, And: 2, Not: 3}


def _prec(node: Node) -> int:
    return _PREC.get(type(node), 4)


def _operand(o: Operand) -> str:
    if isinstance(o, Attr):
        return o.name
    v = o.value
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def unparse(node: Node) -> str:
    """The canonical text of `node`: lowercase keywords, single quotes, minimal parentheses.
    `parse(unparse(n)) == n` for every well-typed `n`."""

    def wrap(child: Node, tighter_than: int) -> str:
        text = unparse(child)
        return f"({text})" if _prec(child) < tighter_than else text

    if isinstance(node, Compare):
        return f"{_operand(node.left)} {node.op} {_operand(node.right)}"
    if isinstance(node, InList):
        return f"{node.attr.name} {'not in' if node.negated else 'in'} @{node.list_name}"
    if isinstance(node, Truth):
        return node.attr.name
    if isinstance(node, Not):
        return f"not {wrap(node.operand, 3)}"
    word, prec = ("and", 2) if isinstance(node, And) else ("or", 1)
    # Left-associative: a right child of the same precedence needs parentheses.
    return f"{wrap(node.left, prec)} {word} {wrap(node.right, prec + 1)}"


# --- parsing -------------------------------------------------------------------------------


def parse(text: str, lists: Mapping[str, str] | None = None) -> Node:
    """Parse and type-check `text`. With `lists` (list name → kind), every `@list` must exist
    and hold the attribute's kind of values."""
    parser = _Parser(tokenize(text), lists)
    node = parser.expr(0)
    end = parser.peek()
    if end.kind != "end":
        want = "'and', 'or' or ')'" if end.kind != ")" else "'and' or 'or'"
        raise RuleSyntaxError(f"expected {want} at {end.pos}, found {describe(end)}", end.pos)
    return node


class _Parser:
    def __init__(self, tokens: list[Token], lists: Mapping[str, str] | None) -> None:
        self.tokens = tokens
        self.i = 0
        self.lists = lists
        self.conditions = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "keyword" and tok.text == word:
            self.i += 1
            return True
        return False

    def expr(self, depth: int) -> Node:
        node = self.and_expr(depth)
        while self.keyword("or"):
            node = Or(node, self.and_expr(depth))
        return node

    def and_expr(self, depth: int) -> Node:
        node = self.not_expr(depth)
        while self.keyword("and"):
            node = And(node, self.not_expr(depth))
        return node

    def not_expr(self, depth: int) -> Node:
        tok = self.peek()
        if depth >= MAX_DEPTH:
            raise RuleSyntaxError(
                f"expression nested too deeply at {tok.pos}: at most {MAX_DEPTH} levels", tok.pos
            )
        if self.keyword("not"):
            return Not(self.not_expr(depth + 1))
        return self.primary(depth)

    def primary(self, depth: int) -> Node:
        tok = self.peek()
        if tok.kind == "(":
            self.take()
            node = self.expr(depth + 1)
            close = self.take()
            if close.kind != ")":
                raise RuleSyntaxError(
                    f"expected ')' at {close.pos} to close the '(' at {tok.pos}, "
                    f"found {describe(close)}",
                    close.pos,
                )
            return node
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise RuleSyntaxError(
                f"too many conditions at {tok.pos}: at most {MAX_CONDITIONS}", tok.pos
            )
        left, left_attr = self.operand()
        nxt = self.peek()
        if nxt.kind == "op":
            self.take()
            right, right_attr = self.operand()
            return self.comparison(nxt, left, left_attr, right, right_attr, tok.pos)
        if nxt.kind == "keyword" and nxt.text in ("in", "not"):
            return self.membership(left, left_attr, tok.pos)
        if left_attr is not None and left_attr.type is bool:
            return Truth(Attr(left_attr.name))
        what = "a comparison operator or 'in'" if left_attr is not None else "an operator"
        raise RuleSyntaxError(f"expected {what} at {nxt.pos}, found {describe(nxt)}", nxt.pos)

    def operand(self) -> tuple[Operand, Attribute | None]:
        tok = self.take()
        if tok.kind in ("int", "str"):
            assert tok.value is not None
            return Lit(tok.value), None
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            return Lit(tok.text == "true"), None
        if tok.kind == "name":
            attribute = CATALOGUE.get(tok.text)
            if attribute is None:
                raise RuleSyntaxError(_unknown(tok), tok.pos)
            return Attr(tok.text), attribute
        raise RuleSyntaxError(
            f"expected an attribute, a literal or '(' at {tok.pos}, found {describe(tok)}",
            tok.pos,
        )

    def comparison(
        self,
        op: Token,
        left: Operand,
        left_attr: Attribute | None,
        right: Operand,
        right_attr: Attribute | None,
        pos: int,
    ) -> Compare:
        if left_attr is None and right_attr is None:
            raise RuleSyntaxError(f"a comparison needs an attribute at {pos}", pos)
        attr = left_attr or right_attr
        assert attr is not None
        for side, side_attr in ((left, left_attr), (right, right_attr)):
            kind = side_attr.type if side_attr is not None else type(side.value)  # type: ignore[union-attr]
            if kind is not attr.type:
                raise RuleSyntaxError(
                    f"type mismatch at {op.pos}: {attr.name} is {_type_name(attr.type)}, "
                    f"compared with {_type_name(kind)}",
                    op.pos,
                )
        if op.text not in ("==", "!=") and attr.type is not int:
            raise RuleSyntaxError(
                f"'{op.text}' at {op.pos} compares integers only; {attr.name} is "
                f"{_type_name(attr.type)}: use == or !=",
                op.pos,
            )
        left = _normalized(left, right_attr)
        right = _normalized(right, left_attr)
        return Compare(op.text, left, right)

    def membership(self, left: Operand, left_attr: Attribute | None, pos: int) -> InList:
        negated = self.keyword("not")
        word = self.peek()
        if not self.keyword("in"):
            raise RuleSyntaxError(f"expected 'in' at {word.pos}, found {describe(word)}", word.pos)
        target = self.take()
        if target.kind != "list":
            raise RuleSyntaxError(
                f"expected a list ('@name') at {target.pos}, found {describe(target)}",
                target.pos,
            )
        if left_attr is None or not isinstance(left, Attr):
            raise RuleSyntaxError(f"'in' needs an attribute on its left at {pos}", pos)
        if left_attr.list_kind is None:
            raise RuleSyntaxError(
                f"{left_attr.name} at {pos} cannot be looked up in a list; lists hold "
                "card_fingerprint, card_bin, email or ip_address values",
                pos,
            )
        if self.lists is not None:
            kind = self.lists.get(target.text)
            if kind is None:
                raise RuleSyntaxError(
                    f"unknown list '@{shown(target.text)}' at {target.pos}", target.pos
                )
            if kind != left_attr.list_kind:
                raise RuleSyntaxError(
                    f"list '@{target.text}' at {target.pos} holds {kind} values, "
                    f"not {left_attr.list_kind}",
                    target.pos,
                )
        return InList(left, target.text, negated)


def _normalized(side: Operand, attr: Attribute | None) -> Operand:
    # Literals take the attribute's canonical form: currency == 'USD' means 'usd'.
    if isinstance(side, Lit) and isinstance(side.value, str) and attr is not None:
        return Lit(attr.normalize(side.value))
    return side


def _type_name(kind: type) -> str:
    return {int: "an integer", str: "a string", bool: "a boolean"}.get(kind, "unknown")


def _unknown(tok: Token) -> str:
    name = shown(tok.text)
    close = difflib.get_close_matches(tok.text.lower(), list(CATALOGUE), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown attribute '{name}' at {tok.pos}{hint}"
