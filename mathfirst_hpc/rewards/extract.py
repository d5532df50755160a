"""Final-answer extraction shared by the verifiers: last ``\\boxed{}`` (nested braces), "the answer is" forms,
the last fenced code block, and the text after a reasoning block (``</think>``).

Every function returns ``None`` when the response carries no answer of that form: callers turn that into the
verdict ``unparseable``, never into a guess.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|\banswer)\s*(?:\*\*)?\s*(?:is\s*:?|:|：)\s*(?:\*\*)?\s*(?P<ans>[^\n]+)",
    re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(?P<ans>.*?)</answer>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+#.-]*)[ \t]*\n(?P<body>.*?)```", re.DOTALL)


def strip_think(text: str) -> str:
    """The part after the last ``</think>`` (the final answer section), or the whole text."""
    _, sep, after = text.rpartition("</think>")
    return after if sep else text


def brace_group(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the brace group opening at ``text[start] == '{'`` and the index after it, or None."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Contents of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``), else None."""
    best_pos, best = -1, None
    for command in _BOX_COMMANDS:
        pos = len(text)
        while True:
            pos = text.rfind(command, 0, pos)
            if pos < 0 or pos <= best_pos:
                break
            after = pos + len(command)
            while after < len(text) and text[after] == " ":
                after += 1
            group = brace_group(text, after)
            if group is not None:
                best_pos, best = pos, group[0]
                break
            if after > pos + len(command):  # "\boxed 5": a space, then one token
                token = re.match(r"[^\s$.,]+", text[after:])
                if token:
                    best_pos, best = pos, token.group(0)
                    break
    return best.strip() if best is not None else None


def answer_phrase(text: str) -> str | None:
    """The answer in the last "the answer is X" / "Final answer: X" / "Answer: X", stripped of $ and a final '.'."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group("ans").strip()
    for _ in range(2):  # "$x$." and "**x**."
        answer = re.sub(r"[.。]\s*$", "", answer).strip()
        answer = re.sub(r"^(\$+|\*\*)|(\$+|\*\*)$", "", answer).strip()
        answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
    return answer or None


def answer_tag(text: str) -> str | None:
    """Contents of the last ``<answer>...</answer>`` (Guru logic prompts ask for it), else None."""
    matches = list(_ANSWER_TAG.finditer(text))
    return matches[-1].group("ans").strip() if matches else None


def final_answer(text: str) -> str | None:
    """The final answer of a free-text response: the last <answer> tag (unboxed), else the last \\boxed{},
    else the last answer phrase, else None."""
    text = strip_think(text)
    tagged = answer_tag(text)
    if tagged is not None:
        return last_boxed(tagged) or tagged
    boxed = last_boxed(text)
    return boxed if boxed is not None else answer_phrase(text)


def last_fenced_block(text: str) -> tuple[str, str] | None:
    """(language tag, body) of the last complete fenced code block, or None."""
    blocks = list(_FENCE.finditer(strip_think(text)))
    if not blocks:
        return None
    last = blocks[-1]
    return last.group("lang").lower(), last.group("body").strip("\n")
