"""LaTeX / plain-text math -> sympy expression, without ``eval`` and without ``parse_expr``.

Two steps: :func:`tex_to_python` translates LaTeX by a whitelist into a tiny expression language (numbers,
single-letter / Greek / subscripted names, known functions, ``+ - * / ** ! ( ) ,``); :func:`parse_tex` parses
that with a small precedence-climbing parser straight into *unevaluated* sympy objects (``evaluate=False``), with
implicit multiplication (``2x``, ``x y``, ``2\\sqrt{3}``, ``(a)(b)``) and function application without brackets
(``\\sin x``). Nothing a model writes reaches Python's ``eval``; an unsupported construct raises
:class:`MathParseError` and the answer is then compared as text only.

:func:`evaluate_safely` turns the unevaluated tree into sympy's evaluated form unless it contains huge powers or
factorials (``2^{10^9}`` would compute for minutes): exact rational arithmetic for the cases it is cheap for.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .extract import brace_group

_TEXT_COMMANDS = ("text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mbox", "operatorname", "textnormal",
                  "mathit", "boldsymbol")


class MathParseError(ValueError):
    """The text is not an expression the translator supports."""



_FUNCS = {"sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
          "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
          "ln": "log", "log": "log", "exp": "exp", "sqrt": "sqrt"}
_INVERSE = {"sin": "asin", "cos": "acos", "tan": "atan"}
"""``\\sin^{-1}`` is arcsin, not 1/sin."""
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "kappa",
          "lambda_", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega"}
_OPS = {"cdot": "*", "times": "*", "div": "/", "ast": "*", "pi": " pi ", "infty": " oo ", "circ": "",
        "lfloor": " floor(", "rfloor": ")", "lceil": " ceiling(", "rceil": ")"}
_PLAIN_WORDS = ("floor", "ceiling", "sqrt", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sin", "cos", "tan", "cot", "sec",
                "csc", "log", "ln", "exp", "pi", "oo")


def _read_arg(s: str, i: int) -> tuple[str, int]:
    """One macro argument at s[i:]: a brace group, a command, a digit run (for ^), or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise MathParseError("missing argument")
    if s[i] == "{":
        group = brace_group(s, i)
        if group is None:
            raise MathParseError("unbalanced braces")
        return group
    if s[i] == "\\":
        match = re.match(r"\\[a-zA-Z]+", s[i:])
        if match:
            return match.group(0), i + len(match.group(0))
    return s[i], i + 1


def tex_to_python(s: str) -> str:
    """Translate a LaTeX / plain-text math expression into a safe Python expression string."""
    out: list[str] = []
    abs_open = 0
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            match = re.match(r"\\([a-zA-Z]+|.)", s[i:])
            name = match.group(1)
            i += len(match.group(0))
            i = _command(name, s, i, out)
        elif ch == "{":
            group = brace_group(s, i)
            if group is None:
                raise MathParseError("unbalanced braces")
            out.append("(" + tex_to_python(group[0]) + ")")
            i = group[1]
        elif ch == "^":
            if i + 1 < len(s) and s[i + 1].isdigit():
                digits = re.match(r"\d+", s[i + 1:]).group(0)
                out.append(f"**({digits})")
                i += 1 + len(digits)
            else:
                arg, i = _read_arg(s, i + 1)
                out.append("**(" + tex_to_python(arg) + ")")
        elif ch == "_":
            arg, i = _read_arg(s, i + 1)
            if not re.fullmatch(r"[a-zA-Z0-9]+", arg):
                raise MathParseError(f"unsupported subscript {arg!r}")
            if out and out[-1].strip() == "log":
                out[-1] = f" (1/log({arg}))*log"
            elif out and re.fullmatch(r" ?[a-zA-Z] ?", out[-1]):
                out[-1] = f" {out[-1].strip()}_{arg} "
            else:
                raise MathParseError("subscript without a variable")
        elif ch == "|":
            prev = "".join(out).rstrip()
            opening = not prev or prev[-1] in "(+-*/,=" or abs_open == 0
            out.append(" Abs(" if opening else ")")
            abs_open += 1 if opening else -1
            i += 1
        elif ch.isalpha():
            word = next((w for w in _PLAIN_WORDS if s.startswith(w, i)), None)
            if word:
                out.append(f" {word} ")
                i += len(word)
            else:
                # e and i are Euler's number and the imaginary unit; capital E and I stay plain symbols
                out.append({"e": " E ", "i": " I ", "E": " E_ ", "I": " I_ "}.get(ch, f" {ch} "))
                i += 1
        elif ch.isdigit() or ch == ".":
            number = re.match(r"\d*\.?\d+|\d+\.?", s[i:])
            if number is None:
                raise MathParseError("a lone '.'")
            num = number.group(0)
            out.append(num)
            i += len(num)
        elif ch in "+-*/()!,":
            out.append(ch)
            i += 1
        elif ch == "[":
            out.append("(")
            i += 1
        elif ch == "]":
            out.append(")")
            i += 1
        elif ch.isspace():
            out.append(" ")
            i += 1
        else:
            raise MathParseError(f"unsupported character {ch!r}")
    if abs_open:
        raise MathParseError("unbalanced |")
    return "".join(out)


def _command(name: str, s: str, i: int, out: list[str]) -> int:
    """Translate one backslash command starting before s[i]; return the index after its arguments."""
    if name == "frac":
        num, i = _read_arg(s, i)
        den, i = _read_arg(s, i)
        out.append(f"(({tex_to_python(num)})/({tex_to_python(den)}))")
    elif name == "binom":
        n, i = _read_arg(s, i)
        k, i = _read_arg(s, i)
        out.append(f" binomial({tex_to_python(n)},{tex_to_python(k)})")
    elif name == "sqrt":
        index = None
        if i < len(s) and s[i] == "[":
            end = s.index("]", i)
            index, i = s[i + 1:end], end + 1
        arg, i = _read_arg(s, i)
        inner = tex_to_python(arg)
        out.append(f" sqrt({inner})" if index is None else f"(({inner})**(1/({tex_to_python(index)})))")
    elif name in _INVERSE and re.match(r"\^\s*(\{\s*-1\s*\}|-1)", s[i:]):
        out.append(f" {_INVERSE[name]}")
        i += re.match(r"\^\s*(\{\s*-1\s*\}|-1)", s[i:]).end()
    elif name in _FUNCS:
        out.append(f" {_FUNCS[name]}")
    elif name in _GREEK or name + "_" in _GREEK:
        out.append(f" {name}_ " if name == "lambda" else f" {name} ")
    elif name in _OPS:
        out.append(_OPS[name])
    elif name in _TEXT_COMMANDS or name in ("mathit", "mathbf", "mathrm"):
        arg, i = _read_arg(s, i)
        out.append("(" + tex_to_python(arg) + ")")
    elif name == " ":
        out.append(" ")
    else:
        raise MathParseError(f"unsupported command \\{name}")
    return i


# ---------------------------------------------------------------------------------------------------------------
# Parser: token list -> unevaluated sympy expression
# ---------------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+\.?\d*|\.\d+)|(?P<name>[A-Za-z]+(?:_[A-Za-z0-9]+)?_?)|(?P<op>\*\*|[-+*/!(),]))")
_CONST_NAMES = ("pi", "E", "I", "oo")
_FUNC_NAMES = ("sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "sinh", "cosh", "tanh", "log",
               "exp", "sqrt", "Abs", "binomial", "floor", "ceiling")
_MAX_POW_EXPONENT = 2000
_MAX_FACTORIAL = 500


def _tokens(code: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    code = code.rstrip()
    while pos < len(code):
        match = _TOKEN.match(code, pos)
        if not match or match.end() == pos:
            raise MathParseError(f"unexpected {code[pos:pos + 10]!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        import sympy
        self.sp = sympy
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise MathParseError(f"expected {value or 'more input'}")
        self.i += 1
        return token

    def starts_atom(self) -> bool:
        token = self.peek()
        return token is not None and (token[0] in ("num", "name") or token[1] == "(")

    def expr(self) -> Any:
        sp = self.sp
        terms = [self.term()]
        while self.peek() and self.peek()[1] in "+-":
            op = self.take()[1]
            term = self.term()
            terms.append(term if op == "+" else sp.Mul(-1, term, evaluate=False))
        return terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)

    def term(self) -> Any:
        sp = self.sp
        factors = [self.unary()]
        while True:
            token = self.peek()
            if token and token[1] in "*/":
                self.take()
                factor = self.unary()
                factors.append(factor if token[1] == "*" else sp.Pow(factor, -1, evaluate=False))
            elif self.starts_atom():
                factors.append(self.power())  # implicit multiplication
            else:
                break
        return factors[0] if len(factors) == 1 else sp.Mul(*factors, evaluate=False)

    def unary(self) -> Any:
        token = self.peek()
        if token and token[1] in "+-":
            self.take()
            inner = self.unary()
            return inner if token[1] == "+" else self.sp.Mul(-1, inner, evaluate=False)
        return self.power()

    def power(self) -> Any:
        base = self.postfix()
        if self.peek() and self.peek()[1] == "**":
            self.take()
            return self.sp.Pow(base, self.unary(), evaluate=False)
        return base

    def postfix(self) -> Any:
        value = self.atom()
        while self.peek() and self.peek()[1] == "!":
            self.take()
            value = self.sp.factorial(value, evaluate=False)
        return value

    def atom(self) -> Any:
        sp = self.sp
        kind, value = self.take()
        if kind == "num":
            return sp.Float(value, 30) if "." in value else sp.Integer(value)
        if value == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if kind != "name":
            raise MathParseError(f"unexpected {value!r}")
        if value in _CONST_NAMES:
            return {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo}[value]
        if value in _FUNC_NAMES:
            return self.call(value)
        if len(value.split("_")[0]) > 1 and value.rstrip("_") not in {g.rstrip("_") for g in _GREEK}:
            raise MathParseError(f"unknown name {value!r}")
        return sp.Symbol(value)

    def call(self, name: str) -> Any:
        sp = self.sp
        exponent = None
        if self.peek() and self.peek()[1] == "**":  # \sin^2 x
            self.take()
            exponent = self.unary()
        if self.peek() and self.peek()[1] == "(":
            self.take()
            args = [self.expr()]
            while self.peek() and self.peek()[1] == ",":
                self.take()
                args.append(self.expr())
            self.take(")")
        else:
            args = [self.power()]
        fn = {"asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "Abs": sp.Abs}.get(name) or getattr(sp, name)
        if name == "sqrt":
            value = sp.Pow(args[0], sp.Rational(1, 2), evaluate=False)
        elif name == "log" and len(args) == 2:
            value = sp.Mul(sp.log(args[0], evaluate=False), sp.Pow(sp.log(args[1], evaluate=False), -1,
                                                                     evaluate=False), evaluate=False)
        else:
            value = fn(*args, evaluate=False)
        return value if exponent is None else sp.Pow(value, exponent, evaluate=False)


@lru_cache(maxsize=4096)
def parse_tex(text: str) -> Any:
    """Unevaluated sympy expression of a LaTeX / plain-text math string (cached: a group shares references)."""
    code = tex_to_python(text)
    tokens = _tokens(code)
    if not tokens:
        raise MathParseError("empty expression")
    parser = _Parser(tokens)
    try:
        expr = parser.expr()
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise MathParseError(f"cannot build {code!r}: {type(exc).__name__}") from None
    if parser.peek() is not None:
        raise MathParseError(f"unexpected {parser.peek()[1]!r} in {code!r}")
    return expr


def _too_big(expr: Any) -> bool:
    import sympy
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.exp.is_number and not node.base.is_Symbol:
            exponent = node.exp.evalf(15)
            if exponent.is_real and abs(exponent) > _MAX_POW_EXPONENT:
                return True
        if isinstance(node, (sympy.factorial, sympy.binomial)) and any(
                a.is_number and a.evalf(15).is_real and abs(a.evalf(15)) > _MAX_FACTORIAL for a in node.args):
            return True
    return False


def evaluate_safely(expr: Any) -> Any | None:
    """sympy's evaluated form of an unevaluated tree, or None when that could be expensive."""
    if _too_big(expr):
        return None

    def rebuild(node: Any) -> Any:
        if not node.args:
            return node
        return node.func(*[rebuild(a) for a in node.args])

    try:
        return rebuild(expr)
    except (TypeError, ValueError, ZeroDivisionError, RecursionError):
        return None
