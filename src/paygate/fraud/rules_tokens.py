"""The tokenizer of the fraud rule language (paygate.fraud.rules_lang) and its error.

Tokens: names (`[A-Za-z_][A-Za-z0-9_]*`; `and`, `or`, `not`, `in`, `true`, `false` are keywords,
case-insensitive), integers (`-?[0-9]+`, at most 18 digits), strings in single or double quotes
(escapes `\\\\`, `\\'`, `\\"`), `@list` references, `==` `!=` `<` `<=` `>` `>=`, parentheses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paygate.fraud.attributes import Value

MAX_INT_DIGITS = 18  # inside a signed 64-bit integer
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})


class RuleSyntaxError(ValueError):
    """An expression that does not parse or does not type-check; `position` is 1-based."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # name | keyword | int | str | op | ( | ) | list | end
    text: str
    pos: int  # 1-based
    value: Value | None = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"-?[0-9]+")
_SPACE = " \t\r\n"
_DIGITS = re.compile(r"[0-9]{6,}")
_DIGIT = "0123456789"  # ASCII only: str.isdigit() also takes '¹' and '٣'
_DIGIT_SET = frozenset(_DIGIT)


def describe(tok: Token) -> str:
    if tok.kind == "end":
        return "the end of the expression"
    if tok.kind == "str":
        return "a string"
    if tok.kind == "int":
        return "an integer"
    if tok.kind == "list":
        return "a list"
    return f"'{shown(tok.text)}'"


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        pos = i + 1
        if ch in _SPACE:
            i += 1
        elif ch in "()":
            tokens.append(Token(ch, ch, pos))
            i += 1
        elif ch in "=!<>":
            two = text[i : i + 2]
            if two in ("==", "!=", "<=", ">="):
                tokens.append(Token("op", two, pos))
                i += 2
            elif ch in "<>":
                tokens.append(Token("op", ch, pos))
                i += 1
            else:
                hint = "'=='" if ch == "=" else "'!=' or 'not'"
                raise RuleSyntaxError(f"unexpected '{ch}' at {pos}; did you mean {hint}?", pos)
        elif ch in "'\"":
            i, value = _string(text, i)
            tokens.append(Token("str", text[pos - 1 : i], pos, value))
        elif ch in _DIGIT or (ch == "-" and text[i + 1 : i + 2] in _DIGIT_SET):
            m = _INT.match(text, i)
            assert m is not None
            digits = m.group(0).lstrip("-")
            if len(digits) > MAX_INT_DIGITS:
                raise RuleSyntaxError(
                    f"integer too long at {pos}: at most {MAX_INT_DIGITS} digits", pos
                )
            i = m.end()
            if i < n and (text[i].isalnum() or text[i] == "_"):
                raise RuleSyntaxError(f"unexpected character after the integer at {i + 1}", i + 1)
            tokens.append(Token("int", m.group(0), pos, int(m.group(0))))
        elif ch == "@":
            m = _NAME.match(text, i + 1)
            if m is None:
                raise RuleSyntaxError(f"expected a list name after '@' at {pos + 1}", pos + 1)
            tokens.append(Token("list", m.group(0), pos))
            i = m.end()
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            m = _NAME.match(text, i)
            assert m is not None
            word = m.group(0)
            if word.lower() in KEYWORDS:
                tokens.append(Token("keyword", word.lower(), pos))
            else:
                tokens.append(Token("name", word, pos))
            i = m.end()
        else:
            shown = f"'{ch}'" if ch.isprintable() and ch.isascii() else f"U+{ord(ch):04X}"
            raise RuleSyntaxError(f"unexpected character {shown} at {pos}", pos)
    tokens.append(Token("end", "", n + 1))
    return tokens


def _string(text: str, start: int) -> tuple[int, str]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return i + 1, "".join(out)
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in ("\\", "'", '"'):
                raise RuleSyntaxError(
                    f"unknown escape at {i + 1}: only \\\\, \\' and \\\" are allowed", i + 1
                )
            out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    raise RuleSyntaxError(f"unterminated string starting at {start + 1}", start + 1)


def shown(name: str) -> str:
    # A name is the caller's text: digit runs are masked as values are (never a card number).
    name = _DIGITS.sub("…", name)
    return name if len(name) <= 40 else name[:40] + "…"
