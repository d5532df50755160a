"""Math answer normalisation and equivalence (used by rewards/math.py; the sympy part runs in a worker process).

Pipeline: ``normalize`` (strings: delimiters, \\dfrac/\\tfrac, \\left/\\right, spacing, text wrappers, units,
percent, degrees, dollars, thousands separators) -> ``parse_structure`` (matrix, union of intervals, interval or
tuple with its brackets, set, bare list, equation/inequality, expression) -> ``equivalent`` (structure by
structure; scalars by exact fractions, then by sympy).

Scalar equivalence with sympy is numeric, not ``simplify``: both sides are evaluated at 50 significant digits
(and, with free symbols, at several fixed irrational-ish points) and must agree to a *relative* tolerance of
1e-10. A relative tolerance keeps ``1/2^{99}`` and ``1/2^{98}`` apart (an absolute one would not); evaluation
keeps ``1-1/e`` and ``1+1/e`` apart; equations compare ``lhs - rhs`` up to a constant factor, so
``3x-y+13=0`` and ``3x+4y+14=0`` differ while ``y=2x+1`` and ``2x-y+1=0`` agree.

LaTeX becomes sympy through rewards/math_parse.py (a whitelist translator and a small parser; no ``eval``).
What it does not support raises :class:`MathParseError`; the answer is then compared as text only.

Infinity keeps its sign: a tree holding ``oo`` is evaluated by sympy's own arithmetic before comparison
(``Mul(-1, oo, evaluate=False).evalf()`` is ``+oo``, which made ``-\\infty`` equal ``\\infty``).

``\\pm`` / ``\\mp`` (and the Unicode signs) expand to the two answers they stand for, with the usual
convention that every ``\\pm`` of one answer takes the same sign and every ``\\mp`` the other: ``x = 1 \\pm 2``
is the list ``x = 3, x = -1`` and equals ``\\{-1, 3\\}`` or ``-1, 3``. Inside a set or list the two values are
spliced in (``\\{1 \\pm \\sqrt{2}\\}`` has two elements).

Inequalities compare as solution sets on one variable, a deliberately small, sound subset:

* a chain of exactly two relations ``a < x \\le b`` (both from ``<, \\le`` or both from ``>, \\ge``) whose middle is
  a single variable (a letter, optionally subscripted) that neither end mentions is the interval ``(a, b]``;
* a single relation with a lone variable on one side and an expression without it on the other is a half-line
  (``x > 3`` is ``(3, \\infty)``) when it meets an interval;
* these equal an interval written ``(a, b]`` or ``x \\in (a, b]`` with the same brackets and equivalent ends, and
  each other when the variables agree (a bare interval has no variable). ``x < -2 \\text{ or } x > 3`` equals
  ``(-\\infty, -2) \\cup (3, \\infty)`` piece by piece.

Not covered (compared as before: relation by relation, else text): longer chains, chains with ``=`` or
``\\ne``, ``|x| < 1``, conditions on two variables, and unions that overlap or touch. An open pair ``(1, 3)`` is
ambiguous (an interval or a point): as a response to an inequality reference it is read as the interval, but a
reference ``(1, 3)`` with finite ends is never matched by an inequality response (math-verify decides both cases
the same way); ``(3, \\infty)`` is no point and matches ``x > 3`` either way.

Units and counted nouns: a trailing word after a number is dropped when it names a unit or what is counted
(``10 cm``, ``36 square units``, ``3 apples`` all equal the bare number), as math-verify's unit normalisation
(its unit list names "apple", and it drops a trailing ``\\text{...}``) and the Hendrycks MATH grader's removal
of a trailing ``\\text{ ...}`` do: the question fixes what is counted, and naming it does not change the value. Words that change the value are never dropped: ``3 million`` / ``2.5 thousand`` /
``4 dozen`` are read as the numbers 3000000 / 2500 / 48, and ``3 halves``, ``3 squared`` and the like stay
text (so they do not equal ``3``).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Callable

from .extract import brace_group
from .math_parse import MathParseError, evaluate_safely, parse_tex

Node = tuple[Any, ...]
"""("expr", text) | ("rel", op, lhs, rhs) | ("seq", open, close, items) | ("set", items) | ("list", items[, "pm"])
| ("matrix", rows) | ("union", items) | ("interval", open, close, lo, hi, variable)"""

SET_OPEN, SET_CLOSE = "\u2983", "\u2984"  # stand-ins for \{ \} that survive brace handling


# ---------------------------------------------------------------------------------------------------------------
# String normalisation
# ---------------------------------------------------------------------------------------------------------------

_UNITS = {
    "cm", "mm", "km", "m", "meter", "meters", "metre", "metres", "centimeters", "kilometers", "inch", "inches",
    "ft", "feet", "foot", "yard", "yards", "mile", "miles", "mph", "kg", "g", "gram", "grams", "kilograms", "lb",
    "lbs", "pound", "pounds", "ounce", "ounces", "oz", "s", "sec", "second", "seconds", "min", "minute", "minutes",
    "h", "hr", "hrs", "hour", "hours", "day", "days", "week", "weeks", "month", "months", "year", "years", "dollar",
    "dollars", "cent", "cents", "unit", "units", "sq", "square", "cubic", "degree", "degrees", "radian", "radians",
    "percent", "liter", "liters", "litre", "ml", "people", "students", "ways", "points", "times", "items",
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12,
           "dozen": 12}
"""Words that multiply the number before them: ``3 million`` is 3000000, never 3."""
_VALUE_WORDS = {"half", "halves", "third", "thirds", "quarter", "quarters", "fourth", "fourths", "fifth", "fifths",
                "squared", "cubed", "score", "gross", "lakh", "lakhs", "crore", "crores", "bn"}
"""Words that change the value and are not read as a number: the answer stays text, unequal to the bare number."""
_MATH_WORDS = {"or", "and", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "oo", "inf",
               "infty", "infinity", "mod", "pmod", "i", "e"}
"""Words that are mathematics, not units, after a number."""
_TEXT_COMMANDS = ("text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mbox", "operatorname", "textnormal",
                  "mathit", "boldsymbol")
_SPACING = re.compile(r"\\(?:[,;:! ]|quad|qquad|displaystyle|textstyle|limits)(?![a-zA-Z])|~")
_SIZING = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])")


def _unwrap_text(s: str) -> str:
    """Drop \\text{unit} after a number; unwrap other text groups (\\text{(B)} -> (B))."""
    pattern = re.compile(r"\\(" + "|".join(_TEXT_COMMANDS) + r")\s*(?=\{)")
    pieces, pos, groups = [], 0, []
    for match in pattern.finditer(s):
        if match.start() < pos:
            continue
        group = brace_group(s, match.end())
        if group is None:
            continue
        pieces.append(s[pos:match.start()])
        pieces.append("\0")
        groups.append(group[0])
        pos = group[1]
    if not groups:
        return s
    pieces.append(s[pos:])
    skeleton = "".join(pieces)
    outside = skeleton.replace("\0", "").strip()
    # a trailing word group after a number is a unit ("10\text{ cm}"); inner ones are words ("1\text{ or }2")
    last = groups[-1] if skeleton.rstrip().endswith("\0") else None
    drop_last = last is not None and bool(re.search(r"\d", outside)) and bool(
        re.fullmatch(r"\s*[a-zA-Z][a-zA-Z .]*(\^\{?\d\}?)?\s*", last)) and not _changes_value(last)
    out = skeleton
    for k, g in enumerate(groups):
        out = out.replace("\0", "" if (drop_last and k == len(groups) - 1) else g, 1)
    return out


def _changes_value(words: str) -> bool:
    """True when a word after a number scales it ('million', 'halves', 'squared'): never drop it as a unit."""
    return any(w.lower().rstrip("s") in _SCALES or w.lower() in _SCALES or w.lower() in _VALUE_WORDS
               for w in words.replace(".", " ").split())


def _apply_scale(s: str) -> str:
    """'3 million' -> '3000000', '2.5 thousand' -> '2500', '4 dozen' -> '48' (a plain number and one scale word)."""
    match = re.fullmatch(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?:\\text\{\s*)?([a-zA-Z]+?)s?(?:\s*\})?", s)
    if not match or match.group(2).lower() not in _SCALES:
        return s
    value = Fraction(match.group(1)) * _SCALES[match.group(2).lower()]
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def _strip_unit_words(s: str) -> str:
    """'10 cm' -> '10', '5 square units' -> '5', '3 apples' -> '3'; words only after something that ends in a
    digit, brace or paren, and never words that change the value ('3 million', '3 halves')."""
    match = re.fullmatch(r"(?P<val>.*?[\d})])\s*(?P<words>[a-zA-Z][a-zA-Z .]*?)\s*(\^\{?[23]\}?)?", s)
    if match and not _changes_value(match.group("words")):
        words = match.group("words").replace(".", " ").split()
        if words and all(w.lower() in _UNITS or (len(w) > 1 and w.lower() not in _MATH_WORDS) for w in words):
            return match.group("val").strip()
    return s


def normalize(text: str) -> str:
    """Canonical string form of an answer (no semantics beyond formatting)."""
    s = str(text).strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = _SIZING.sub("", s)
    s = _SPACING.sub(" ", s)
    s = s.replace("\\{", SET_OPEN).replace("\\}", SET_CLOSE)
    s = s.replace("\\lbrace", SET_OPEN).replace("\\rbrace", SET_CLOSE)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("\u2212", "-").replace("\u2264", "\\le").replace("\u2265", "\\ge").replace("\u2260", "\\ne")
    s = s.replace("\u00b1", "\\pm ").replace("\u2213", "\\mp ")
    s = re.sub(r"\\(leq|leqslant)(?![a-zA-Z])", r"\\le", s)
    s = re.sub(r"\\(geq|geqslant)(?![a-zA-Z])", r"\\ge", s)
    s = re.sub(r"\\(neq)(?![a-zA-Z])", r"\\ne", s)
    s = _unwrap_text(s)
    s = re.sub(r"(\d)\{,\}(?=\d)", r"\1", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"[.;,]$", "", s).strip()
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"\d{1,3}(?: \d{3})+(?:\.\d+)?", s):
        s = s.replace(" ", "")
    s = _apply_scale(s)
    s = _strip_unit_words(s)
    s = re.sub(r"\b(infinity|inf)\b", r"\\infty", s)
    s = re.sub(r"\\varnothing(?![a-zA-Z])|^" + SET_OPEN + r"\s*" + SET_CLOSE + "$", r"\\emptyset", s)
    s = re.sub(r"^\\?(?:text)?\(?([A-J])\)?$", r"\1", s)  # (B) -> B for multiple-choice answers in math sets
    return s.strip()


def had_percent(text: str) -> bool:
    return "%" in str(text)


def text_key(s: str) -> str:
    """Whitespace-free key for exact comparison after normalisation."""
    return re.sub(r"\s+", "", s)


# ---------------------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------------------

_OPENERS, _CLOSERS = "([{" + SET_OPEN, ")]}" + SET_CLOSE
_RELATIONS = (("\\le", "<="), ("\\ge", ">="), ("\\ne", "!="), ("<=", "<="), (">=", ">="), ("!=", "!="),
              ("<", "<"), (">", ">"), ("=", "="))


def _cut_top_level(s: str, match: Callable[[str, int], tuple[int, str] | None]) -> tuple[list[str], list[str]]:
    """Cut ``s`` wherever ``match(s, i)`` finds a cut (its length and label) outside every bracket and brace;
    returns the stripped pieces and the labels of the cuts between them."""
    pieces, labels, depth, start, i = [], [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and (cut := match(s, i)) is not None:
            pieces.append(s[start:i].strip())
            labels.append(cut[1])
            i = start = i + cut[0]
            continue
        i += 1
    pieces.append(s[start:].strip())
    return pieces, labels


def split_top(s: str, seps: tuple[str, ...] = (",",)) -> list[str]:
    """Split at separators that sit outside every bracket and brace."""
    return _cut_top_level(s, lambda text, i: next(((len(sep), sep) for sep in seps if text.startswith(sep, i)),
                                                  None))[0]


def _closes_at_end(s: str) -> bool:
    """True when the bracket opening at s[0] closes at the last character (any bracket kind)."""
    depth = 0
    for i, ch in enumerate(s):
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def _matrix(s: str) -> Node | None:
    match = re.fullmatch(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}", s, re.DOTALL)
    if not match:
        return None
    rows = [r for r in re.split(r"\\\\", match.group(2)) if r.strip()]
    return ("matrix", tuple(tuple(parse_structure(c) for c in row.split("&")) for row in rows))


def parse_structure(s: str) -> Node:
    s = s.strip()
    matrix = _matrix(s)
    if matrix:
        return matrix
    parts = split_top(s, ("\\cup",))
    if len(parts) > 1:
        return ("union", tuple(parse_structure(p) for p in parts))
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)
    if s.startswith(SET_OPEN) and s.endswith(SET_CLOSE) and _closes_at_end(s):
        inner = s[1:-1].strip()
        return ("set", _spliced(split_top(inner, (",", ";"))) if inner else ())
    if s[:1] in "([" and s[-1:] in ")]" and _closes_at_end(s):
        items = split_top(s[1:-1])
        if len(items) > 1:
            return ("seq", s[0], s[-1], tuple(parse_structure(p) for p in items))
    items = split_top(s, (",", ";", "\\text{ or }", " or ", " and "))
    if len(items) > 1:
        return ("list", _spliced([p for p in items if p]))
    if _PLUS_MINUS.search(s):
        return ("list", (parse_structure(_choose_sign(s, "+")), parse_structure(_choose_sign(s, "-"))), "pm")
    pieces, ops = _split_relations(s)
    if len(ops) == 1 and pieces[0] and pieces[1]:
        if ops[0] in (">", ">="):  # a > b  ==  b < a
            return ("rel", ops[0].replace(">", "<"), pieces[1], pieces[0])
        return ("rel", ops[0], pieces[0], pieces[1])
    if len(ops) == 2:
        return _chain_interval(pieces, ops) or ("expr", s)
    return ("expr", s)


_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?")


def _choose_sign(s: str, sign: str) -> str:
    """Every \\pm becomes ``sign``, every \\mp the other sign (the usual correlated reading)."""
    other = "-" if sign == "+" else "+"
    return _PLUS_MINUS.sub(lambda m: f" {sign if m.group(0) == chr(92) + 'pm' else other} ", s)


def _spliced(parts: list[str]) -> tuple[Node, ...]:
    """Items of a set or list; an item with \\pm contributes its two values."""
    out: list[Node] = []
    for part in parts:
        node = parse_structure(part)
        out.extend(node[1] if node[0] == "list" and node[2:] == ("pm",) else (node,))
    return tuple(out)


def _relation_at(s: str, i: int) -> tuple[int, str] | None:
    """The relation operator starting at ``s[i]`` (its length and canonical form); ``\\le`` not in ``\\left``."""
    return next(((len(tex), op) for tex, op in _RELATIONS if s.startswith(tex, i)
                 and not (tex[0] == "\\" and s[i + len(tex):i + len(tex) + 1].isalpha())), None)


def _split_relations(s: str) -> tuple[list[str], list[str]]:
    """Pieces and relation operators (as ``<``, ``<=``, ``=``, ``!=``, ``>``, ``>=``) at bracket depth 0."""
    return _cut_top_level(s, _relation_at)


def _mentions(text: str, var: str) -> bool:
    return re.search(r"(?<![a-zA-Z\\])" + re.escape(var) + r"(?![a-zA-Z])", text) is not None


def _chain_interval(pieces: list[str], ops: list[str]) -> Node | None:
    """``a < x \\le b`` (or ``b \\ge x > a``) -> ("interval", "(", "]", a, b, "x"); None outside the subset."""
    if all(op in ("<", "<=") for op in ops):
        lo, var, hi, (op_lo, op_hi) = pieces[0], pieces[1], pieces[2], ops
    elif all(op in (">", ">=") for op in ops):
        lo, var, hi, (op_hi, op_lo) = pieces[2], pieces[1], pieces[0], ops
    else:
        return None
    var = text_key(var)
    if not lo or not hi or not _VARIABLE.fullmatch(var) or _mentions(lo, var) or _mentions(hi, var):
        return None
    return ("interval", "(" if op_lo in ("<", ">") else "[", ")" if op_hi in ("<", ">") else "]",
            parse_structure(lo), parse_structure(hi), var)


# ---------------------------------------------------------------------------------------------------------------
# Exact fast path: integers, decimals, plain fractions
# ---------------------------------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def as_fraction(s: str) -> Fraction | None:
    """Exact value of an integer, decimal, 'a/b' or '\\frac{a}{b}' (optionally signed), else None."""
    s = text_key(s)
    if re.fullmatch(_NUM, s):
        return Fraction(s)
    match = re.fullmatch(r"(-?)\\frac\{(" + _NUM + r")\}\{(" + _NUM + r")\}", s) or \
        re.fullmatch(r"(-?)\\frac(\d)(\d)", s) or re.fullmatch(r"(-?)\(?(" + _NUM + r")\)?/\(?(" + _NUM + r")\)?", s)
    repeating = re.fullmatch(r"(-?)(\d*)\.(\d*)\\overline\{(\d+)\}", s)  # 0.1\overline{6} = 1/6
    if repeating:
        whole, fixed, period = repeating.group(2) or "0", repeating.group(3), repeating.group(4)
        value = Fraction(int(whole)) + Fraction(int(fixed or "0"), 10 ** len(fixed)) + Fraction(
            int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
        return -value if repeating.group(1) else value
    mixed = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)
    if mixed and int(mixed.group(4)) != 0 and int(mixed.group(3)) < int(mixed.group(4)):  # 2\frac{1}{2} = 5/2
        value = int(mixed.group(2)) + Fraction(int(mixed.group(3)), int(mixed.group(4)))
        return -value if mixed.group(1) else value
    if match:
        den = Fraction(match.group(3))
        if den == 0:
            return None
        value = Fraction(match.group(2)) / den
        return -value if match.group(1) == "-" else value
    return None


def looks_textual(s: str) -> bool:
    """A word answer ('Monday', 'even'): compare as text; sympy would read it as a product of symbols."""
    bare = re.sub(r"\\[a-zA-Z]+", " ", s)
    return bool(re.search(r"[a-zA-Z]{3,}", bare)) and not re.search(
        r"\b(sqrt|sin|cos|tan|cot|sec|csc|log|ln|exp|pi|arcsin|arccos|arctan)\b", bare)


# ---------------------------------------------------------------------------------------------------------------
# sympy: parse and compare numerically (runs in the worker process)
# ---------------------------------------------------------------------------------------------------------------

_REL_TOL_FLOAT = 1e-10
"""Relative tolerance when either side has a decimal number (decimals carry rounding)."""
_REL_TOL_EXACT = 1e-40
"""Relative tolerance between exact expressions, evaluated at _DIGITS digits (2^{100} and 2^{100}+1 differ)."""
_DIGITS = 80
_TINY = 1e-60
_EXACT_LIMIT = 10 ** 400
"""Exact (rational) arithmetic is tried only for values below this (2^{10^9} would take minutes)."""
_POINTS = ((0.7236, 1.3141, 0.5477, 1.8713), (1.2894, 0.6682, 2.2361, 0.9173), (2.0517, 1.7391, 0.8412, 1.4142),
           (-0.4329, -1.6457, 1.1618, -0.6931))
"""Generic values for free symbols; the last row has negatives, so sqrt(x^2) is |x|, not x."""


def _value(expr: Any, point: dict[Any, float]) -> Any:
    """expr evaluated at _DIGITS digits (a sympy number), or None when not a finite number there."""
    import sympy
    if expr.has(sympy.oo):  # evalf of an unevaluated Mul(-1, oo) is +oo: let sympy's arithmetic keep the sign
        expr = evaluate_safely(expr) or expr
    value = expr.evalf(_DIGITS, subs=point) if point else expr.evalf(_DIGITS)
    if value.free_symbols or value.has(sympy.zoo, sympy.nan) or not value.is_number:
        return None
    if value in (sympy.oo, -sympy.oo):
        return value
    if value.is_finite is False:
        return None
    return value


def _close(a: Any, b: Any, rel_tol: float) -> bool:
    import sympy
    if a in (sympy.oo, -sympy.oo) or b in (sympy.oo, -sympy.oo):
        return a == b
    scale = max(abs(a), abs(b))
    if scale < _TINY:
        return True
    return bool(abs(a - b) <= rel_tol * scale)


def _tolerance(*exprs: Any) -> float:
    import sympy
    return _REL_TOL_FLOAT if any(e.atoms(sympy.Float) for e in exprs) else _REL_TOL_EXACT


def _points(*exprs: Any) -> list[dict[Any, float]]:
    """Evaluation points: none for constants; else fixed generic values (no special structure)."""
    symbols = sorted(set().union(*(e.free_symbols for e in exprs)), key=str)
    if not symbols:
        return [{}]
    return [{sym: row[k % len(row)] + 0.1 * (k // len(row)) for k, sym in enumerate(symbols)} for row in _POINTS]


def _exact_rationals(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both sides as exact sympy Rationals when they are cheap to evaluate exactly, else None."""
    import sympy
    if a.free_symbols or b.free_symbols or a.atoms(sympy.Float) or b.atoms(sympy.Float):
        return None
    ea, eb = evaluate_safely(a), evaluate_safely(b)
    if isinstance(ea, sympy.Rational) and isinstance(eb, sympy.Rational):
        return ea, eb
    return None


def sympy_equal(a_text: str, b_text: str) -> bool:
    """True when the two expressions are equal: exactly for rational constants, else numerically everywhere
    we evaluate them (see the module docstring for the tolerances)."""
    a, b = parse_tex(a_text), parse_tex(b_text)
    exact = _exact_rationals(a, b)
    if exact is not None:
        return bool(exact[0] == exact[1])
    rel_tol = _tolerance(a, b)
    compared = 0
    for point in _points(a, b):
        va, vb = _value(a, point), _value(b, point)
        if va is None or vb is None:
            if (va is None) != (vb is None):
                return False
            continue
        if not _close(va, vb, rel_tol):
            return False
        compared += 1
    if compared == 0:
        import sympy
        ea, eb = evaluate_safely(a), evaluate_safely(b)
        return ea is not None and eb is not None and bool(sympy.simplify(ea - eb) == 0)
    return True


def sympy_relation_equal(op: str, a: tuple[str, str], b: tuple[str, str]) -> bool:
    """lhs-rhs of two relations agree up to a constant factor (positive for inequalities)."""
    import sympy
    fa = sympy.Add(parse_tex(a[1]), sympy.Mul(-1, parse_tex(a[0]), evaluate=False), evaluate=False)
    fb = sympy.Add(parse_tex(b[1]), sympy.Mul(-1, parse_tex(b[0]), evaluate=False), evaluate=False)
    rel_tol = _tolerance(fa, fb)
    ratio = None
    for point in _points(fa, fb):
        va, vb = _value(fa, point), _value(fb, point)
        if va is None or vb is None:
            continue
        if abs(vb) < _TINY or abs(va) < _TINY:
            if not (abs(vb) < _TINY and abs(va) < _TINY):
                return False
            continue
        r = va / vb
        if ratio is None:
            ratio = r
        elif not _close(r, ratio, rel_tol):
            return False
    if ratio is None:
        return False
    if op not in ("=", "!=") and not (ratio.is_real and ratio > 0):
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Structural equivalence
# ---------------------------------------------------------------------------------------------------------------

def scalar_equal(a: str, b: str) -> bool:
    if text_key(a) == text_key(b):
        return True
    fa, fb = as_fraction(a), as_fraction(b)
    if fa is not None and fb is not None:
        return fa == fb
    if looks_textual(a) or looks_textual(b):
        return text_key(a).lower() == text_key(b).lower()
    try:
        return sympy_equal(a, b)
    except MathParseError:
        return False


def _unordered_equal(xs: tuple[Node, ...], ys: tuple[Node, ...]) -> bool:
    if len(xs) != len(ys):
        return False
    remaining = list(ys)
    for x in xs:
        match = next((k for k, y in enumerate(remaining) if equivalent(x, y)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True


def _drop_variable(node: Node) -> Node:
    """'x = 5' -> '5' (a solved single-variable equation compares as its value)."""
    if node[0] == "rel" and node[1] == "=" and re.fullmatch(r"[a-zA-Z](_\w+)?", text_key(node[2])):
        return parse_structure(node[3])
    return node


_INFINITY = ("expr", "\\infty")
_MINUS_INFINITY = ("expr", "-\\infty")


def _as_interval(node: Node) -> Node | None:
    """An interval, a two-item bracketed pair, or a half-line relation on a lone variable, as an interval."""
    if node[0] == "interval":
        return node
    if node[0] == "seq" and len(node[3]) == 2:
        return ("interval", node[1], node[2], node[3][0], node[3][1], None)
    if node[0] == "rel" and node[1] in ("<", "<="):
        close = ")" if node[1] == "<" else "]"
        lhs, rhs = text_key(node[2]), text_key(node[3])
        if _VARIABLE.fullmatch(lhs) and not _mentions(node[3], lhs):  # x < b
            return ("interval", "(", close, _MINUS_INFINITY, parse_structure(node[3]), lhs)
        if _VARIABLE.fullmatch(rhs) and not _mentions(node[2], rhs):  # a < x
            return ("interval", "(" if node[1] == "<" else "[", ")", parse_structure(node[2]), _INFINITY, rhs)
    return None


def _intervals_equal(a: Node, b: Node) -> bool:
    return a[1:3] == b[1:3] and (a[5] is None or b[5] is None or a[5] == b[5]) and equivalent(a[3], b[3]) \
        and equivalent(a[4], b[4])


def equivalent(a: Node, b: Node) -> bool:
    """Structural equivalence of two parsed answers (a = reference, b = response)."""
    kinds = {a[0], b[0]}
    if "interval" in kinds or kinds == {"rel", "seq"}:
        if a[0] == "seq" and a[1:3] == ("(", ")") and not any("\\infty" in str(x[-1]) for x in a[3]):
            return False  # the reference (1, 3) may be a point: no inequality matches it; (3, \infty) is no point
        ia, ib = _as_interval(a), _as_interval(b)
        if ia is not None and ib is not None:
            return _intervals_equal(ia, ib)
        if "interval" in kinds:
            return False
    if kinds == {"union", "list"}:  # x < -2 or x > 3  ==  (-oo, -2) U (3, oo)
        return _unordered_equal(a[1], b[1])
    if a[0] != b[0]:
        if a[0] == "rel" or b[0] == "rel":
            a2, b2 = _drop_variable(a), _drop_variable(b)
            return (a2, b2) != (a, b) and equivalent(a2, b2)
        if {a[0], b[0]} == {"set", "list"}:
            return _unordered_equal(a[1], b[1])
        if {a[0], b[0]} == {"seq", "list"}:
            seq, lst = (a, b) if a[0] == "seq" else (b, a)
            return seq[1:3] == ("(", ")") and len(seq[3]) == len(lst[1]) and \
                all(equivalent(x, y) for x, y in zip(seq[3], lst[1]))
        return False
    kind = a[0]
    if kind == "expr":
        return scalar_equal(a[1], b[1])
    if kind == "rel":
        if a[1] != b[1]:
            return False
        if text_key(a[2]) == text_key(b[2]) and scalar_equal(a[3], b[3]):
            return True
        try:
            return sympy_relation_equal(a[1], (a[2], a[3]), (b[2], b[3]))
        except MathParseError:
            return False
    if kind == "seq":
        return a[1:3] == b[1:3] and len(a[3]) == len(b[3]) and all(equivalent(x, y) for x, y in zip(a[3], b[3]))
    if kind in ("set", "list", "union"):
        return _unordered_equal(a[1], b[1])
    if kind == "matrix":
        return len(a[1]) == len(b[1]) and all(
            len(ra) == len(rb) and all(equivalent(x, y) for x, y in zip(ra, rb)) for ra, rb in zip(a[1], b[1]))
    return False


def compare_normalized(reference: str, response: str, percent: bool = False) -> bool:
    """Worker entry point: normalised reference vs normalised response."""
    ref, resp = parse_structure(reference), parse_structure(response)
    if equivalent(ref, resp):
        return True
    if percent and ref[0] == "expr" and resp[0] == "expr":
        # "50\%" also accepts 0.5
        value = as_fraction(ref[1])
        got = as_fraction(resp[1])
        return value is not None and got is not None and got * 100 == value
    return False
