"""The labelled reward table: (domain, reference, response, expected verdict), every row scored through the router.

Used by tests/unit/rewards/test_reward_cases.py and by bench/bench_math_verify.py (its math rows). Domains are given as
data_source prefixes the router knows ('math', 'stem', 'code', 'simulation', 'logic', 'tabular'). Code rows run
through a local fake sandbox in the test (trusted snippets only).
"""

from __future__ import annotations

import json

C, I, U, E = "correct", "incorrect", "unparseable", "error"


def _b(x: str) -> str:
    return "so the result is \\boxed{" + x + "}"


MATH: list[tuple[str, str, str]] = [
    # --- the traps other checkers get wrong -------------------------------------------------------------------
    ("1-\\frac{1}{e}", _b("1+\\frac{1}{e}"), I),
    ("1-1/e", _b("1+1/e"), I),
    ("1-\\frac{1}{e}", _b("\\frac{e-1}{e}"), C),
    ("\\frac{1}{2^{99}}", _b("\\frac{1}{2^{98}}"), I),
    ("\\frac{1}{2^{99}}", _b("2^{-99}"), C),
    ("\\frac{1}{2^{99}}", _b("\\frac{1}{2^{99}}"), C),
    ("\\frac{1}{2^{98}}", _b("\\frac{2}{2^{99}}"), C),
    ("3x-y+13=0", _b("3x+4y+14=0"), I),
    ("3x-y+13=0", _b("y=3x+13"), C),
    ("3x-y+13=0", _b("6x-2y+26=0"), C),
    ("3x-y+13=0", _b("-3x+y-13=0"), C),
    ("3x+4y+14=0", _b("3x+4y+14=0"), C),
    ("2^{100}", _b("2^{100}+1"), I),
    ("2^{100}", _b("1267650600228229401496703205376"), C),
    # --- numbers, fractions, decimals ----------------------------------------------------------------------------
    ("10", _b("10"), C), ("10", _b("11"), I), ("-3", _b("-3"), C), ("-3", _b("3"), I), ("-3", _b("\u22123"), C),
    ("0", _b("0"), C), ("0", _b("-0"), C), ("7", _b("7.5"), I), ("100", _b("100.0"), C), ("1.5", _b("1.50"), C),
    ("\\frac{1}{2}", _b("0.5"), C), ("0.5", _b("\\frac12"), C), ("\\dfrac{3}{4}", _b("\\tfrac{3}{4}"), C),
    ("\\frac{3}{2}", _b("1.5"), C), ("\\frac{5}{2}", _b("\\frac{10}{4}"), C), ("\\frac{5}{2}", _b("2\\frac{1}{2}"), C),
    ("\\frac{-1}{2}", _b("-\\frac{1}{2}"), C), ("\\frac{-1}{2}", _b("\\frac{1}{2}"), I), ("3/4", _b("0.75"), C),
    ("\\frac{2}{3}", _b("0.667"), I), ("0.333", _b("\\frac13"), I), ("\\frac{1}{3}", _b("0.3333333333333333"), C),
    ("\\frac{7}{8}", _b("\\frac{8}{7}"), I), ("1.25", _b("\\frac{5}{4}"), C), ("12", _b("12.0001"), I),
    # --- formatting: thousands, percent, degrees, units, money, text ---------------------------------------------
    ("1,000", _b("1000"), C), ("1000", _b("1{,}000"), C), ("12345", _b("12,345"), C), ("1000000", _b("1,000,000"), C),
    ("1000", _b("1,001"), I), ("50\\%", _b("50"), C), ("50\\%", _b("50\\%"), C), ("25\\%", _b("0.25"), C),
    ("50", _b("50\\%"), C), ("40\\%", _b("45\\%"), I), ("30^\\circ", _b("30"), C), ("30", _b("30^{\\circ}"), C),
    ("45", _b("45\u00b0"), C), ("60^\\circ", _b("30^\\circ"), I), ("10\\text{ cm}", _b("10"), C),
    ("10", _b("10\\text{ cm}"), C), ("5", _b("5 \\text{ meters}"), C), ("12", _b("12 \\mbox{ units}"), C),
    ("\\$18.90", _b("18.90"), C), ("18.9", _b("\\$18.90"), C), ("20", "The answer is 20 dollars.", C),
    ("36", _b("36 \\text{ square units}"), C), ("36", _b("37 \\text{ square units}"), I),
    ("\\text{Monday}", _b("\\text{Monday}"), C), ("\\text{Monday}", _b("monday"), C),
    ("\\text{Monday}", _b("Tuesday"), I), ("\\text{even}", _b("\\text{odd}"), I), ("\\text{(B)}", _b("B"), C),
    ("B", _b("(B)"), C), ("B", _b("C"), I), ("6", _b("\\text{6}"), C), ("10", _b("10\\,\\text{kg}"), C),
    # --- radicals, constants, complex --------------------------------------------------------------------------
    ("2\\sqrt{2}", _b("\\sqrt{8}"), C), ("2\\sqrt{2}", _b("\\sqrt{6}"), I), ("\\frac{\\sqrt{3}}{2}", _b("\\frac{1}{2}\\sqrt{3}"), C),
    ("\\frac{\\sqrt{2}}{2}", _b("\\frac{1}{\\sqrt{2}}"), C), ("\\frac{\\sqrt{2}}{2}", _b("\\sqrt{2}"), I),
    ("\\sqrt{5}-1", _b("-1+\\sqrt{5}"), C), ("\\sqrt{5}-1", _b("1-\\sqrt{5}"), I), ("\\sqrt[3]{2}", _b("2^{1/3}"), C),
    ("\\sqrt[3]{2}", _b("\\sqrt{2}"), I), ("3\\sqrt{3}", _b("\\sqrt{27}"), C), ("\\frac{\\sqrt{2}}{4}", _b("\\frac{\\sqrt{\\frac{1}{2}}}{2}"), C),
    ("\\pi", _b("3.14"), I), ("2\\pi", _b("2 \\pi"), C), ("\\frac{\\pi}{2}", _b("\\pi/2"), C), ("\\frac{\\pi}{3}", _b("\\frac{\\pi}{6}"), I),
    ("4\\pi", _b("\\pi \\cdot 4"), C), ("e^{2}", _b("e^2"), C), ("e^2", _b("2e"), I), ("\\infty", _b("\\infty"), C),
    ("3+4i", _b("4i+3"), C), ("3+4i", _b("3-4i"), I), ("\\frac{1+i}{2}", _b("\\frac{1}{2}+\\frac{i}{2}"), C),
    ("\\ln 2", _b("\\ln(2)"), C), ("\\log_2 8", _b("3"), C), ("\\binom{5}{2}", _b("10"), C), ("5!", _b("120"), C),
    ("2^{10}", _b("1024"), C), ("1024", _b("2^10"), C), ("10^{-3}", _b("0.001"), C), ("\\sqrt{2}+\\sqrt{3}", _b("\\sqrt{5}"), I),
    ("\\sin 30^\\circ", _b("\\sin 30"), C),
    ("\\frac{1}{3}", _b("0.\\overline{3}"), C), ("\\frac{1}{6}", _b("0.1\\overline{6}"), C),
    ("\\frac{1}{3}", _b("0.\\overline{4}"), I), ("\\frac{\\pi}{4}", _b("\\tan^{-1} 1"), C),
    ("\\frac{\\pi}{6}", _b("\\sin^{-1}(1/2)"), C), ("2", _b("\\left\\lfloor 2.5 \\right\\rfloor"), C),
    ("3", _b("\\lceil 2.1 \\rceil"), C), ("\\varnothing", _b("\\{\\}"), C), ("\\sqrt{2}", _b("1.41421356"), I),
    # --- expressions ---------------------------------------------------------------------------------------------
    ("x^2+2x+1", _b("(x+1)^2"), C), ("(x+1)^2", _b("x^2+1"), I), ("\\frac{a+b}{2}", _b("\\frac{b+a}{2}"), C),
    ("\\frac{x}{x+1}", _b("1-\\frac{1}{x+1}"), C), ("2x", _b("x+x"), C), ("2x", _b("x^2"), I), ("xy", _b("yx"), C),
    ("a^2-b^2", _b("(a-b)(a+b)"), C), ("a^2-b^2", _b("(a-b)^2"), I), ("\\frac{1}{x}", _b("x^{-1}"), C),
    ("\\sqrt{x^2}", _b("|x|"), C), ("\\sqrt{x^2}", _b("x"), I), ("\\ln(x^2)", _b("2\\ln x"), I), ("3(x-2)", _b("3x-6"), C), ("3(x-2)", _b("3x-2"), I), ("n(n+1)/2", _b("\\frac{n^2+n}{2}"), C),
    ("\\sin^2 x + \\cos^2 x", _b("1"), C), ("2\\sin x \\cos x", _b("\\sin(2x)"), C), ("\\sin x", _b("\\cos x"), I),
    ("e^{x}", _b("\\exp(x)"), C), ("|x-1|", _b("|1-x|"), C), ("|x-1|", _b("x-1"), I),
    # --- intervals, sets, tuples, lists --------------------------------------------------------------------------
    ("(-\\infty, 3]", _b("(-\\infty,3]"), C), ("(-\\infty, 3]", _b("(-\\infty,3)"), I), ("[2,5)", _b("[2, 5)"), C),
    ("[2,5)", _b("(2,5]"), I), ("(-\\infty,-2)\\cup(3,\\infty)", _b("(3,\\infty)\\cup(-\\infty,-2)"), C),
    ("(-\\infty,-2)\\cup(3,\\infty)", _b("(-\\infty,-2]\\cup(3,\\infty)"), I), ("x \\in [1,2]", _b("[1,2]"), C),
    ("\\left[ \\frac{1}{2}, 3 \\right)", _b("[0.5,3)"), C), ("(0, \\frac{\\pi}{2})", _b("(0,\\pi/2)"), C),
    ("\\{1,2,3\\}", _b("\\{3,1,2\\}"), C), ("\\{1,2,3\\}", _b("\\{1,2\\}"), I), ("\\{1,2,3\\}", _b("1, 2, 3"), C),
    ("(1,2)", _b("(2,1)"), I), ("(1,2)", _b("(1, 2)"), C), ("(1,2)", _b("1, 2"), C), ("(\\frac{1}{2}, 3)", _b("(0.5, 3)"), C),
    ("1, 2, 3", _b("3, 2, 1"), C), ("1, 2, 3", _b("1, 2"), I), ("-2, 3", _b("3,-2"), C), ("2, 3", _b("2, -3"), I),
    ("(1,2,3)", _b("(1,3,2)"), I), ("(3, -1)", _b("\\left(3, -1\\right)"), C),
    # --- equations and inequalities -------------------------------------------------------------------------------
    ("x=5", _b("5"), C), ("5", _b("x=5"), C), ("x=5", _b("x=-5"), I), ("y=2x+1", _b("y=1+2x"), C),
    ("y=2x+1", _b("y=2x-1"), I), ("2x+4y=8", _b("x+2y=4"), C), ("x^2+y^2=1", _b("y^2+x^2=1"), C),
    ("x^2+y^2=1", _b("x^2+y^2=2"), I), ("x=1 \\text{ or } x=2", _b("x=2, x=1"), C), ("a=2, b=3", _b("b=3, a=2"), C),
    ("a=2, b=3", _b("a=3, b=2"), I), ("x > 3", _b("x>3"), C), ("x>3", _b("3<x"), C), ("x>3", _b("x<3"), I),
    ("x \\ge 3", _b("x \\geq 3"), C), ("x\\ge3", _b("x>3"), I), ("x \\le -1", _b("-x \\ge 1"), C),
    ("y = -\\frac{1}{2}x + 3", _b("x + 2y = 6"), C), ("y = -\\frac{1}{2}x + 3", _b("x - 2y = 6"), I),
    # --- matrices ----------------------------------------------------------------------------------------------
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", _b("\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"), C),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", _b("\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}"), I),
    ("\\begin{pmatrix}\\frac{1}{2}\\\\-1\\end{pmatrix}", _b("\\begin{pmatrix}0.5\\\\-1\\end{pmatrix}"), C),
    ("\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}", _b("\\begin{pmatrix}1&0&0\\\\0&1&0\\end{pmatrix}"), I),
    ("\\begin{pmatrix}x&2x\\end{pmatrix}", _b("\\begin{pmatrix}x&x+x\\end{pmatrix}"), C),
    # --- extraction ------------------------------------------------------------------------------------------------
    ("42", "The answer is 42.", C), ("\\frac{3}{5}", "Final answer: $\\frac{3}{5}$", C), ("7", "**Answer:** 7", C),
    ("\\frac{\\sqrt{2}}{4}", "\\boxed{\\frac{\\sqrt{\\frac{1}{2}}}{2}}", C), ("4", "First \\boxed{3}, actually \\boxed{4}", C),
    ("3", "First \\boxed{3}, actually \\boxed{4}", I), ("5", "I don't know", U), ("5", "\\boxed{", U), ("5", "", U),
    ("5", "<think>maybe 5</think> the result is \\boxed{5}", C), ("5", "<think>\\boxed{5}</think> no idea", U),
    ("5", "\\boxed 5", C), ("5", "\\fbox{5}", C), ("12", "$\\boxed{12}$.", C), ("12", "<answer>12</answer>", C),
    ("\\frac{1}{2}", "We get \\boxed{\\dfrac{1}{2}}.", C), ("8", "2+6=8 so the answer is $8$", C), ("8", "\\boxed{8}\\boxed{9}", I),
    ("9", "the answer is: 9", C), ("x+1", "The final answer is $x + 1$.", C), ("3", "\\boxed{\\text{3 apples}}", C),
    ("\\{1,2\\}", "\\boxed{\\{\\{1,2\\}\\}}", I), ("2", "\\boxed{}", I), ("2", "\\boxed{2x}", I),
    # --- infinity keeps its sign (issue 13) ---------------------------------------------------------------------
    ("\\infty", _b("-\\infty"), I), ("-\\infty", _b("\\infty"), I), ("-\\infty", _b("-\\infty"), C),
    ("+\\infty", _b("\\infty"), C), ("(-\\infty, 3)", _b("(\\infty, 3)"), I), ("[0, \\infty)", _b("[0, -\\infty)"), I),
    # --- plus-minus: the two answers it stands for (correlated signs) -------------------------------------------
    ("x = 1 \\pm 2", _b("\\{-1, 3\\}"), C), ("x = 1 \\pm 2", _b("-1, 3"), C), ("x = 1 \\pm 2", _b("3"), I),
    ("x = 1 \\pm 2", _b("x = 3 \\text{ or } x = -1"), C), ("x = 1 \\pm 2", _b("\\{1, 3\\}"), I),
    ("1 \\pm \\sqrt{2}", _b("1+\\sqrt{2}, 1-\\sqrt{2}"), C), ("\\pm 2", _b("2, -2"), C), ("2, -2", _b("\\pm 2"), C),
    ("\\{2 \\pm \\sqrt{3}\\}", _b("\\{2-\\sqrt{3}, 2+\\sqrt{3}\\}"), C), ("2 \\pm \\sqrt{3}", _b("2+\\sqrt{3}"), I),
    ("x = \\pm 3", _b("x = \\pm 2"), I), ("a \\pm b \\mp c", _b("a+b-c, a-b+c"), C), ("a \\pm b \\mp c", _b("a+b+c, a-b-c"), I),
    ("\u00b14", _b("-4, 4"), C), ("\\frac{-1 \\pm \\sqrt{5}}{2}", _b("\\frac{-1+\\sqrt{5}}{2}, \\frac{-1-\\sqrt{5}}{2}"), C),
    # --- chained inequalities and half-lines as intervals -------------------------------------------------------
    ("1 < x \\le 3", _b("x \\in (1, 3]"), C), ("1 < x \\le 3", _b("(1, 3]"), C), ("1 < x \\le 3", _b("[1, 3]"), I),
    ("1 < x \\le 3", _b("3 \\ge x > 1"), C), ("1 < x \\le 3", _b("1 \\le x < 3"), I), ("1 < x \\le 3", _b("1 < y \\le 3"), I),
    ("(1, 3]", _b("1 < x \\leq 3"), C), ("-1 \\le x \\le 1", _b("[-1, 1]"), C), ("2 \u2264 x < 5", _b("[2, 5)"), C),
    ("0 < x < \\frac{\\pi}{2}", _b("(0, \\frac{\\pi}{2})"), C), ("1 < x < 3", _b("1 < x < 4"), I),
    ("1 < x < 3", _b("(1, 3)"), C), ("(1, 3)", _b("1 < x < 3"), I), ("[1, 3)", _b("1 \\le x < 3"), C),
    ("x > 3", _b("(3, \\infty)"), C), ("(3, \\infty)", _b("x > 3"), C), ("x \\ge 3", _b("(3, \\infty)"), I), ("x < 0", _b("(-\\infty, 0)"), C),
    ("x < -2 \\text{ or } x > 3", _b("(-\\infty, -2) \\cup (3, \\infty)"), C),
    ("x < -2 \\text{ or } x > 3", _b("(-\\infty, -2] \\cup (3, \\infty)"), I),
    # --- counted nouns are dropped, value words are not ----------------------------------------------------------
    ("3", _b("3 apples"), C), ("3", "The answer is 3 apples.", C), ("4", _b("3 apples"), I), ("3", _b("3 million"), I),
    ("3000000", _b("3 \\text{ million}"), C), ("48", _b("4 dozen"), C), ("3", _b("3 halves"), I), ("9", _b("3 squared"), I),
    # --- junk and adversarial answers are wrong (or a verifier error), never right -------------------------------
    ("5", _b("__import__('os')"), I), ("5", _b("\\def\\x{5}\\x"), I), ("5", _b("5x"), I), ("5", _b("\\frac{10}{0}"), I),
]

STEM: list[tuple[str, str, str]] = [
    ("B", "\\boxed{B}", C), ("B", "The answer is (B).", C), ("B", "Answer: B", C), ("B", "**Answer:** B", C),
    ("B", "<answer>B</answer>", C), ("B", "B", C), ("B", "(B)", C), ("B", "B) 7", C), ("B", "\\boxed{\\text{B}}", C),
    ("B", "\\boxed{(B)}", C), ("C", "the correct answer is C", C), ("J", "\\boxed{J}", C), ("(D)", "\\boxed{D}", C),
    ("b", "Answer: B", C), ("A", "\\boxed{A}", C), ("E", "So the answer is E.", C), ("B", "\\boxed{C}", I),
    ("B", "Answer: A", I), ("A", "<answer>C</answer>", I), ("D", "The answer is (A).", I), ("B", "\\boxed{B) 7}", C),
    ("B", "I think it is the second one", U), ("B", "", U), ("B", "\\boxed{}", U), ("B", "Answer: maybe", U),
    ("B", "\\boxed{K}", U), ("B", "A long explanation of chemistry without any final letter at all.", U),
    ("B", "Both A and C look plausible but", U), ("C", "<think>C</think>", U),
    ("6.02\\times10^{23}", "\\boxed{6.02 \\times 10^{23}}", C), ("9.8", "The answer is 9.8.", C), ("9.8", "\\boxed{10}", I),
    ("100", "no final answer", U),
]

_AFFINE = json.dumps({"functional": "assert f(1) == 5\nassert f(0) == 2\nassert f(-2) == -4"})
_STDIO = json.dumps({"inputs": ["3 4\n", "10 -2\n"], "outputs": ["7\n", "8\n"]})
_CALL = json.dumps({"fn_name": "rev", "inputs": [["abc"], ["xy"]], "outputs": ["cba", "yx"]})


def _py(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```"


CODE: list[tuple[str, str, str]] = [
    (_AFFINE, _py("def f(x):\n    return 3 * x + 2"), C),
    (_AFFINE, _py("def f(x):\n    return 3 * x + 1"), I),
    (_AFFINE, _py("def f(x) return x"), I),
    (_AFFINE, "def f(x):\n    return 3 * x + 2", U),
    (_AFFINE, _py("def g(x):\n    return 3 * x + 2"), I),
    (_AFFINE, "```python\ndef f(x):\n    return 0\n```\nfixed:\n```python\ndef f(x):\n    return 3*x+2\n```", C),
    (_AFFINE, "```\ndef f(x):\n    return 3*x+2\n```", C),
    (_STDIO, _py("a, b = map(int, input().split())\nprint(a + b)"), C),
    (_STDIO, _py("a, b = map(int, input().split())\nprint(a * b)"), I),
    (_STDIO, _py("a, b = map(int, input().split())\nprint(a + b, end='  \\n\\n')"), C),
    (_STDIO, _py("raise SystemExit(1)"), I),
    (_CALL, _py("def rev(s):\n    return s[::-1]"), C),
    (_CALL, _py("def rev(s):\n    return s"), I),
    (_CALL, _py("def rev(s):\n    return ''.join(reversed(s))"), C),
    (json.dumps({"pytest": "def test(): pass"}), _py("x = 1"), E),
    (json.dumps({"inputs": ["1\n"], "outputs": []}), _py("print(1)"), E),
    (_AFFINE, "```rust\nfn f() {}\n```", I),
    (_AFFINE, "no code at all", U),
]

SIMULATION: list[tuple[str, str, str]] = [
    ("15", "\\boxed{15}", C), ("15", "\\boxed{16}", I), ("15", "The answer is 15", C), ("'cba'", "\\boxed{'cba'}", C),
    ("'cba'", "\\boxed{'abc'}", I), ("'cba'", "```python\nassert f('abc') == 'cba'\n```", C),
    ("'cba'", "assert f('abc') == 'cbb'", I), ("[1, 2, 3]", "\\boxed{[1,2,3]}", C), ("[1, 2, 3]", "\\boxed{(1, 2, 3)}", C),
    ("[1, 2, 3]", "\\boxed{[1, 3, 2]}", I), ("(1, 'a')", "\\boxed{[1, \"a\"]}", C), ("True", "\\boxed{true}", C),
    ("True", "\\boxed{False}", I), ("{'a': 1, 'b': [2]}", "```json\n{\"a\": 1, \"b\": [2]}\n```", C),
    ("{'a': 1, 'b': [2]}", "```json\n{\"a\": 1, \"b\": [3]}\n```", I),
    ('{"output": {"evens": [0], "total": 23}}', "```json\n{\"output\": {\"evens\": [0], \"total\": 23}}\n```", C),
    ('{"output": {"evens": [0], "total": 23}}', "```json\n{\"output\": {\"evens\": [0], \"total\": 24}}\n```", I),
    ('"output": 42', "```json\n{\"output\": 42}\n```", C), ('"output": 42', "```json\n{\"output\": \"42\"}\n```", I),
    ('"input": {"n": 5}', "```json\n{\"input\": {\"n\": 5}}\n```", C), ("0.30000000000000004", "\\boxed{0.3}", C),
    ("3.5", "\\boxed{3.6}", I), ("None", "\\boxed{None}", C), ("'15'", "\\boxed{15}", I), ("15", "I cannot tell", U),
    ("[]", "\\boxed{[]}", C), ("{}", "\\boxed{[]}", I), ("'a b'", "<answer>'a b'</answer>", C), ("2", "", U),
    ("[[1, 2], [3, 4]]", "```python\nassert f(x) == [[1, 2], [3, 4]]\n```", C),
]

_ZEBRA = json.dumps({"header": ["House", "Name", "Drink"], "rows": [["1", "Ann", "tea"], ["2", "Bob", "milk"]]})
_GRID = json.dumps([[0, 1], [1, 0]])

LOGIC: list[tuple[str, str, str]] = [
    (json.dumps(["Eve", "Bob", "Gus"]), "\\boxed{Eve, Bob, Gus}", C), (json.dumps(["Eve", "Bob", "Gus"]), "\\boxed{Bob, Eve, Gus}", I),
    (json.dumps(["Eve", "Bob", "Gus"]), "<answer>['eve', 'bob', 'gus']</answer>", C),
    (json.dumps(["Eve", "Bob", "Gus"]), "<answer>[\"Eve\", \"Bob\"]</answer>", I),
    (json.dumps(["Eve", "Bob", "Gus"]), "The answer is Eve, Bob, Gus.", C), (json.dumps(["Eve", "Bob", "Gus"]), "no idea", U),
    (json.dumps(["owl", "robin", "crow"]), "<answer>[owl, robin, crow]</answer>", C),
    (_ZEBRA, "<answer>" + _ZEBRA + "</answer>", C),
    (_ZEBRA, "<answer>{\"header\": [\"House\", \"Name\", \"Drink\"], \"rows\": [[\"1\", \"ann\", \"Tea\"], [\"2\", \"bob\", \"milk\"]]}</answer>", C),
    (_ZEBRA, "<answer>{\"header\": [\"House\", \"Name\", \"Drink\"], \"rows\": [[\"1\", \"Bob\", \"tea\"], [\"2\", \"Ann\", \"milk\"]]}</answer>", I),
    (_ZEBRA, "<answer>[[\"1\", \"Ann\", \"tea\"], [\"2\", \"Bob\", \"milk\"]]</answer>", C),
    (_ZEBRA, "<answer>Ann drinks tea</answer>", U), (_ZEBRA, "", U),
    (_GRID, "<answer>[[0, 1], [1, 0]]</answer>", C), (_GRID, "<answer>[[0, 1], [1, 1]]</answer>", I),
    (_GRID, "<answer>[[0, 1]]</answer>", I), (_GRID, "```\n0 1\n1 0\n```", C), (_GRID, "The output grid is [[0,1],[1,0]]", C),
    (_GRID, "<answer>no grid</answer>", U), (_GRID, "nothing", U),
    ("ABD", "<answer>ABD</answer>", C), ("ABD", "<answer>abd</answer>", C), ("ABD", "<answer>ACD</answer>", I),
    ("5", "\\boxed{5}", C), ("5", "\\boxed{6}", I), ("5", "Shortest A to D is 5, \\boxed{5.0}", C),
    ("yes", "\\boxed{Yes}", C), ("yes", "\\boxed{no}", I), ("Knight", "The answer is knight.", C),
    (json.dumps(["Dan", "Eve", "Ann"]), "Only one seating fits: Dan, Eve, Ann. \\boxed{Dan, Eve, Ann}", C),
]

TABULAR: list[tuple[str, str, str]] = [
    ("53", "\\boxed{53}", C), ("53", "\\boxed{54}", I), ("1234.5", "\\boxed{1,234.4}", C), ("1234.5", "\\boxed{1,240}", I),
    ("1.0", "\\boxed{1.0009}", C), ("1.0", "\\boxed{1.01}", I), ("45%", "\\boxed{45}", C), ("45", "\\boxed{45\\%}", C),
    ("0.45", "\\boxed{45\\%}", C), ("45%", "\\boxed{0.46}", I), ("$12", "\\boxed{12}", C), ("12", "\\boxed{\\$12.00}", C),
    ("12", "The answer is 12 dollars.", C), ("hat", "\\boxed{hat}", C), ("hat", "\\boxed{The Hat}", C), ("hat", "\\boxed{cup}", I),
    ("New York", "<answer>new york</answer>", C), ("New York", "<answer>New  York.</answer>", C), ("New York", "<answer>York</answer>", I),
    (json.dumps(["2019", "2020"]), "\\boxed{2020, 2019}", C), (json.dumps(["2019", "2020"]), "\\boxed{2019}", I),
    (json.dumps(["2019", "2020"]), "\\boxed{2019, 2020, 2021}", I), (json.dumps(["a", "b"]), "\\boxed{b and a}", C),
    ("-3.5", "\\boxed{-3.5}", C), ("-3.5", "\\boxed{3.5}", I), ("2", "\\boxed{2.0}", C), ("0", "\\boxed{0}", C),
    ("0", "\\boxed{0.0001}", I), ("2", "no answer", U), ("2", "", U), ("17", "Total = 17. \\boxed{17}", C),
    ("1000000", "\\boxed{1,000,000}", C), ("three", "\\boxed{3}", I),
    # integers (years, counts) exactly; non-integers keep the 1e-3 relative tolerance (issue 13)
    ("2019", "\\boxed{2018}", I), ("2019", "\\boxed{2019}", C), ("2019.0", "\\boxed{2018}", I), ("2019.0", "\\boxed{2019}", C),
    ("2019", "\\boxed{2019.4}", I), ("1,250", "\\boxed{1249}", I), ("1250", "<answer>1,250</answer>", C),
    ("1000000", "\\boxed{999,999}", I), (json.dumps(["2018", "2019"]), "\\boxed{2019, 2017}", I),
    (json.dumps([2018, 2019]), "\\boxed{2019, 2018}", C), ("123.456", "\\boxed{123.5}", C), ("45%", "\\boxed{45.02}", C),
    ("12.5", "\\boxed{12.51}", C), ("12.5", "\\boxed{12.6}", I),
]

CASES: list[tuple[str, str, str, str]] = (
    [("math", r, s, v) for r, s, v in MATH] + [("stem", r, s, v) for r, s, v in STEM]
    + [("code", r, s, v) for r, s, v in CODE] + [("simulation", r, s, v) for r, s, v in SIMULATION]
    + [("logic", r, s, v) for r, s, v in LOGIC] + [("tabular", r, s, v) for r, s, v in TABULAR]
)
