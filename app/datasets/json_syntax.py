"""JSON syntax errors in words a person can act on, with the line and column of the file."""

from __future__ import annotations

import json

# Typed by Chinese input methods where JSON needs ASCII; naming them saves a long hunt.
_FULL_WIDTH = {
    "\uff0c": ",",  # fullwidth comma
    "\uff1a": ":",  # fullwidth colon
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u2018": '"',  # left single quotation mark
    "\u2019": '"',  # right single quotation mark
    "\uff3b": "[",  # fullwidth brackets
    "\uff3d": "]",
    "\uff5b": "{",  # fullwidth braces
    "\uff5d": "}",
    "\u3000": " ",  # ideographic space
}

_NOT_JSON_WORDS = (("True", "true"), ("False", "false"), ("None", "null"), ("undefined", "null"))

TOO_DEEP = (
    "the JSON here is nested too deeply (thousands of brackets) to be a training record: "
    "check that the file is not damaged"
)


def syntax_message(exc: json.JSONDecodeError) -> str:
    """The decoder's complaint in words a person can act on, with the column."""
    where = f"invalid JSON at column {exc.colno}"
    doc, pos, msg = exc.doc, exc.pos, exc.msg
    char = doc[pos] if pos < len(doc) else ""
    at_end = not doc[pos:].strip()
    if char in _FULL_WIDTH and not msg.startswith(("Unterminated", "Invalid")):
        return (
            f"{where}: `{char}` is a full-width (Chinese) character; outside of text values JSON "
            f"needs the plain `{_FULL_WIDTH[char]}`"
        )
    if msg.startswith(("Expecting ',' delimiter", "Expecting ':' delimiter")) and at_end:
        explain = "the record ends too early: it is cut off, or it continues on the next line"
    elif msg.startswith("Expecting ',' delimiter"):
        explain = (
            "a comma is missing between two items, or a text value contains a double quote "
            'that is not escaped (write it as \\")'
        )
    elif msg.startswith("Expecting ':' delimiter"):
        explain = "a `:` is missing after a field name"
    elif msg.startswith(("Expecting property name", "Expecting value", "Illegal trailing comma")):
        explain = _explain_missing(doc, pos, char, at_end)
    elif msg.startswith("Unterminated string"):
        explain = "the text value that starts here is not closed with a double quote"
    elif msg.startswith("Invalid control character"):
        explain = (
            "a text value contains a raw line break, tab or other control character: "
            "write a line break as \\n and a tab as \\t"
        )
    elif msg.startswith("Invalid \\"):
        explain = (
            "a backslash starts an invalid escape: write a backslash itself as \\\\ "
            "(for example in Windows paths)"
        )
    elif msg.startswith("Extra data"):
        explain = (
            "there is more after the end of the record; "
            "each line of a .jsonl file holds exactly one record"
        )
        if char == ",":
            explain += ": remove the comma at the end of the line"
    else:
        explain = msg
    return f"{where}: {explain}"


def _explain_missing(doc: str, pos: int, char: str, at_end: bool) -> str:
    if at_end:
        return "the record ends too early: it is cut off, or it continues on the next line"
    if char in "]}":
        return f"there is a comma right before `{char}`: remove the comma after the last item"
    if char == "'":
        return "text and field names need double quotes \", not single quotes '"
    for word, fix in _NOT_JSON_WORDS:
        if doc.startswith(word, pos):
            return f"`{word}` is not JSON: write `{fix}`"
    if char in ",":
        return "a value is missing before this comma"
    return (
        "a value is expected here: text in double quotes, a number, true, false, null, "
        "[ … ] or { … }"
    )
