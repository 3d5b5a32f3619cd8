"""A JSON schema turned into a llama.cpp grammar (GBNF) whose every sentence is JSON valid against the schema.

Why vlmkit has its own: llama-cpp-python's ``json_schema_to_gbnf`` lets raw control characters into
strings (its string character is ``[^"\\]``), so a reply it constrained could still fail to parse,
and it passes over keywords it does not enforce (``minimum``, ``uniqueItems``), so its grammar
accepts replies the schema rejects.

The contract here: every text the grammar accepts parses with ``json.loads`` and validates against
the schema. A keyword the grammar cannot honour makes the schema refused with an
:class:`~vlmkit.errors.InvalidSettingError` that names it and says what to do; it is never
quietly dropped. The grammar may be narrower than the schema, as a subset is still correct:

- whitespace is bounded in every gap (a space, or a newline and up to 20 spaces or tabs), so a
  model cannot ramble in whitespace;
- numbers have at most 16 integer and 16 fraction digits and a two-digit exponent (with bounds:
  no exponent, and 15 significant digits, so that a float never rounds onto an exclusive bound);
- properties come in the schema's order; an object has only its declared properties unless
  ``additionalProperties`` asks for others (a schema that declares none, like ``{"type": "object"}``,
  is any object), and an extra key never repeats a declared one (extra keys may repeat each
  other: JSON allows it, and parsers keep the last);
- a string holds no raw surrogate or code point past U+10FFFF, and no ``\\u`` escape of a
  surrogate (a lone one is not a string every parser takes); that llama.cpp reads the reply's
  bytes as a strict UTF-8 decoder does is :mod:`vlmkit.engine.grammar_guard`'s part;
- ``oneOf`` is accepted when its branches cannot match the same value (different types, or
  objects told apart by a required ``const`` tag, as pydantic's discriminated unions are);
- an ``anyOf`` branch vlmkit cannot express is left out when another branch can be;
- ``anyOf: [number, string]`` with nothing else said is read as a number: pydantic (from 2.14)
  writes a ``Decimal`` so, yet validates only numeric strings, and a number satisfies both;
- OpenAPI's ``nullable`` is read as JSON Schema reads it, as a note: it adds no ``null``.

Pure: a schema in, a grammar's text out; nothing here touches llama.cpp.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vlmkit.errors import InvalidSettingError

__all__ = ["json_schema_grammar"]

_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")

_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$anchor",
        "$comment",
        "$defs",
        "definitions",
        "readOnly",
        "writeOnly",
        "deprecated",
        "discriminator",  # OpenAPI's hint next to a oneOf; the branches' const tags do the work
        "contentEncoding",
        "contentMediaType",
        "nullable",  # OpenAPI's, not JSON Schema's: the grammar keeps to the stricter reading (no null)
    }
)

_HANDLED = frozenset(
    {
        "type",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "additionalItems",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)

_KIND_KEYWORDS = {
    "object": ("properties", "required", "additionalProperties"),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems"),
    "string": ("minLength", "maxLength", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
}

_AFTER_PARSING = "remove it from the schema and check that after parsing the reply"
_ADVICE = {
    "pattern": "vlmkit does not turn regular expressions into grammars; drop 'pattern' (say the format in "
    "the prompt) and check the value after parsing",
    "uniqueItems": "a grammar cannot keep items apart; use a list instead of a set and drop duplicates after parsing",
    "multipleOf": "drop it and round the value after parsing",
    "not": _AFTER_PARSING,
    "if": "write the cases as 'anyOf' branches instead",
    "patternProperties": "declare the properties by name, or use 'additionalProperties'",
    "propertyNames": "use 'additionalProperties' with any key, or declare the properties by name",
}

_MAX_DIGITS = 16
"""Integer digits of a number without bounds (and fraction digits of any number)."""

_EXACT_DIGITS = 15
"""Significant digits of a bounded number: any two such decimals stay apart as doubles."""

_NOT_RAW = '"\\\\\\x00-\\x1F\\uD800-\\uDFFF\\U00110000-\\U7FFFFFFF'
"""What a JSON string never holds as it is: the quote, the backslash, control characters, and what is
not a Unicode scalar value (a surrogate, or past U+10FFFF: llama.cpp reads such ill-formed UTF-8
as one character, every strict decoder as several or none)."""

_PRIMITIVES: dict[str, str] = {
    "ws": '( " " | "\\n" [ \\t]{0,20} )?',
    "json-char": f'[^{_NOT_RAW}] | "\\\\" ( ["\\\\/bfnrt] | "u" json-hex-escape )',
    # no surrogates (D800-DFFF): a lone one is not a valid string for every parser
    "json-hex-escape": "[0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}",
    "json-string": '"\\"" json-char* "\\""',
    "json-int": f'"-"? ( "0" | [1-9] [0-9]{{0,{_MAX_DIGITS - 1}}} )',
    "json-number": f'json-int ( "." [0-9]{{1,{_MAX_DIGITS}}} )? ( [eE] [-+]? [0-9]{{1,2}} )?',
    "json-bool": '"true" | "false"',
    "json-value": 'json-object | json-array | json-string | json-number | json-bool | "null"',
    "json-object": '"{" ws ( json-member ( "," ws json-member )* )? "}"',
    "json-member": 'json-string ws ":" ws json-value ws',
    "json-array": '"[" ws ( json-value ws ( "," ws json-value ws )* )? "]"',
    # formats: only dates that exist (February stops at 28), years 1000-9999, RFC 3339 times
    "fmt-date": '[1-9] [0-9]{3} "-" fmt-month-day',
    "fmt-month-day": '( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | '
    '( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] )',
    "fmt-time": 'fmt-hour ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] fmt-hour ":" [0-5] [0-9] )',
    "fmt-hour": '[01] [0-9] | "2" [0-3]',
    "fmt-date-time": 'fmt-date "T" fmt-time',
    "fmt-hex4": "[0-9a-f]{4}",
}

_FORMATS = {
    "date": "fmt-date",
    "time": "fmt-time",
    "date-time": "fmt-date-time",
    "uuid": 'fmt-hex4{2} "-" fmt-hex4 "-" fmt-hex4 "-" fmt-hex4 "-" fmt-hex4{3}',
    # pydantic's UUID1..UUID5: the version digit, and the RFC 4122 variant
    **{
        f"uuid{v}": f'fmt-hex4{{2}} "-" fmt-hex4 "-{v}" [0-9a-f]{{3}} "-" [89ab] [0-9a-f]{{3}} "-" fmt-hex4{{3}}'
        for v in (1, 3, 4, 5)
    },
}

_NOT_PLAIN = frozenset('"\\' + "".join(map(chr, range(0x20))))
"""Characters a JSON string holds only escaped."""

_PRIMITIVE_NAME = re.compile(r"(?<![\w-])(ws|json-[a-z-]+|fmt-[a-z0-9-]+)(?![\w-])")

Interval = tuple[int, int | None]
"""Integers from the first to the second inclusive; ``None``: no end (up to the digit cap)."""


def json_schema_grammar(schema: Any) -> str:
    """The GBNF grammar (start rule ``root``) of the JSON texts valid against ``schema``.

    Raises :class:`~vlmkit.errors.InvalidSettingError` naming the keyword and what to do when the
    schema asks for something a grammar cannot guarantee.
    """
    builder = _Builder(schema)
    root = builder.visit(schema, "#", "root")
    return builder.text(root)


def _refuse(path: str, what: str) -> InvalidSettingError:
    return InvalidSettingError(f"response_format: the JSON schema at {path} {what}")


def _unsupported(path: str, keyword: str) -> InvalidSettingError:
    advice = _ADVICE.get(keyword, _AFTER_PARSING)
    return _refuse(path, f"uses {keyword!r}, which vlmkit cannot enforce in a grammar: {advice}")


def _literal(text: str) -> str:
    """A GBNF literal matching exactly ``text``."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02X}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


def _class_char(ch: str) -> str:
    """``ch`` written inside a GBNF character class."""
    if ch in "]\\^-[":
        return "\\" + ch
    return _literal(ch)[1:-1]


def _alternatives(parts: Sequence[str]) -> str:
    """One element matching any of ``parts`` (each a sequence)."""
    if len(parts) == 1:
        return parts[0] if " " not in parts[0] else f"( {parts[0]} )"
    return "( " + " | ".join(parts) + " )"


def _json_text(value: Any, path: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _refuse(path, f"lists a value that is not JSON ({exc})") from None


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return "object"


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``true != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# --- integers in ranges -------------------------------------------------------------------------


def _same_length(lo: str, hi: str) -> str:
    """The decimal numbers from ``lo`` to ``hi`` (digit strings of one length), as a sequence."""
    if lo == hi:
        return _literal(lo)
    if lo[0] == hi[0]:
        return f"{_literal(lo[0])} {_same_length(lo[1:], hi[1:])}"
    rest = len(lo) - 1
    tail = f" [0-9]{{{rest}}}" if rest else ""
    low_full = set(lo[1:]) <= {"0"}
    high_full = set(hi[1:]) <= {"9"}
    first = int(lo[0]) + (0 if low_full else 1)
    last = int(hi[0]) - (0 if high_full else 1)
    parts = []
    if not low_full:
        parts.append(f"{_literal(lo[0])} {_same_length(lo[1:], '9' * rest)}")
    if first <= last:
        parts.append((f"[{first}-{last}]" if first < last else f'"{first}"') + tail)
    if not high_full:
        parts.append(f"{_literal(hi[0])} {_same_length('0' * rest, hi[1:])}")
    return _alternatives(parts)


def _naturals(span: Interval, cap: int) -> str:
    """Decimal numbers (no leading zeros) in ``span`` of non-negative integers; no end: up to ``cap`` digits."""
    lo, hi = span
    top = hi if hi is not None else 10 ** max(cap, len(str(lo))) - 1
    parts: list[str] = []
    full: list[int] = []  # lengths whose every number is in range: folded into one repetition
    for length in range(len(str(lo)), len(str(top)) + 1):
        start, end = (10 ** (length - 1) if length > 1 else 0), 10**length - 1
        a, b = max(lo, start), min(top, end)
        if a > b:
            continue
        if (a, b) == (start, end) and length > 1:
            full.append(length)
        else:
            parts.append(_same_length(str(a), str(b)))
    if full:
        low, high = full[0] - 1, full[-1] - 1
        parts.append(f"[1-9] [0-9]{{{low}}}" if low == high else f"[1-9] [0-9]{{{low},{high}}}")
    return _alternatives(parts)


def _meet(a: Interval | None, b: Interval | None) -> Interval | None:
    if a is None or b is None:
        return None
    lo = max(a[0], b[0])
    hi = a[1] if b[1] is None else b[1] if a[1] is None else min(a[1], b[1])
    return None if hi is not None and hi < lo else (lo, hi)


def _minus(a: Interval | None, b: Interval | None) -> list[Interval]:
    if a is None:
        return []
    if _meet(a, b) is None:
        return [a]
    assert b is not None
    out: list[Interval] = []
    if a[0] < b[0]:
        out.append((a[0], b[0] - 1))
    if b[1] is not None and (a[1] is None or a[1] > b[1]):
        out.append((b[1] + 1, a[1]))
    return out


def _span(lo: int | None, hi: int | None, floor: int) -> Interval | None:
    """The integers from ``max(lo, floor)`` to ``hi`` (``None``: no end), or ``None`` when there are none."""
    start = floor if lo is None else max(lo, floor)
    return None if hi is not None and hi < start else (start, hi)


def _integers(lo: int | None, hi: int | None) -> str:
    """JSON integers from ``lo`` to ``hi`` inclusive (``None``: no bound)."""
    parts = []
    negative = _span(None if hi is None else -hi, None if lo is None else -lo, 1)  # magnitudes
    if negative is not None:
        parts.append(f'"-" {_naturals(negative, _MAX_DIGITS)}')
    positive = _span(lo, hi, 0)
    if positive is not None:
        parts.append(_naturals(positive, _MAX_DIGITS))
    return _alternatives(parts)


@dataclass(frozen=True)
class _Bound:
    """A lower or upper limit: its value, and whether the value itself is excluded."""

    value: Fraction
    exclusive: bool


# --- the builder --------------------------------------------------------------------------------


class _Builder:
    """Walks a schema and collects named rules; :meth:`visit` answers one element of GBNF."""

    def __init__(self, document: Any) -> None:
        self.document = document
        self.rules: dict[str, str] = {}
        self.names: dict[str, str] = {}  # rule body -> name, so that equal rules are written once
        self.refs: dict[str, str] = {}  # $ref -> its rule's name
        self.open_refs: dict[str, int] = {}  # $ref being written -> container depth where it began
        self.depth = 0
        self.merging: set[str] = set()

    # --- output ---------------------------------------------------------------------------------

    def text(self, root: str) -> str:
        rules = {"root": root, **self.rules}
        used: set[str] = set()
        pending = [body for body in rules.values()]
        while pending:
            for name in _PRIMITIVE_NAME.findall(pending.pop()):
                if name not in used and name in _PRIMITIVES:
                    used.add(name)
                    pending.append(_PRIMITIVES[name])
        rules.update((name, body) for name, body in _PRIMITIVES.items() if name in used)
        return "".join(f"{name} ::= {body}\n" for name, body in rules.items())

    def rule(self, hint: str, body: str) -> str:
        """A rule for ``body`` (reusing an equal one), named after ``hint``."""
        if body in self.names:
            return self.names[body]
        name = self.fresh(hint)
        self.rules[name] = body
        self.names[body] = name
        return name

    def fresh(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9]+", "-", hint).strip("-") or "rule"
        name, n = base, 1
        while name in self.rules or name in _PRIMITIVES or name == "root" or name in self.refs.values():
            n += 1
            name = f"{base}-{n}"
        return name

    # --- schemas --------------------------------------------------------------------------------

    def visit(self, schema: Any, path: str, hint: str) -> str:
        """One GBNF element matching exactly the JSON texts valid against ``schema``."""
        if schema is True:
            return "json-value"
        if schema is False:
            raise _refuse(path, "is false: no value may be there; remove what refers to it")
        if not isinstance(schema, Mapping):
            raise _refuse(path, f"must be an object or a boolean, not {type(schema).__name__}")
        for key in schema:
            if key not in _HANDLED and key not in _ANNOTATIONS and not str(key).startswith("x-"):
                raise _unsupported(path, str(key))
        s = {k: v for k, v in schema.items() if k in _HANDLED}
        if "$ref" in s:
            rest = {k: v for k, v in s.items() if k != "$ref"}
            if rest:
                return self.visit({"allOf": [{"$ref": s["$ref"]}, rest]}, path, hint)
            return self.ref(s["$ref"], path)
        if "allOf" in s:
            rest = {k: v for k, v in s.items() if k != "allOf"}
            branches = s["allOf"] if isinstance(s["allOf"], list) else []
            parts = [b for b in branches if b is not True and b != {}] + ([rest] if rest else [])
            if len(parts) == 1:  # pydantic's {"allOf": [{"$ref": ...}], "description": ...}: keep the $ref
                return self.visit(parts[0], f"{path}/allOf/0", hint)
            return self.visit(self.merge_all(s, path), path, hint)
        if "anyOf" in s or "oneOf" in s:
            return self.union(s, path, hint)
        if "enum" in s or "const" in s:
            return self.values(s, path, hint)
        kinds = self.declared_kinds(s, path)
        if kinds is None:
            return "json-value"
        parts = [self.typed(kind, s, path, f"{hint}-{kind}" if len(kinds) > 1 else hint) for kind in kinds]
        return self.rule(hint, " | ".join(parts)) if len(parts) > 1 else parts[0]

    def declared_kinds(self, s: Mapping[str, Any], path: str) -> list[str] | None:
        """The types the schema allows, in order; ``None`` for any value."""
        declared = s.get("type")
        if declared is None:
            kinds = [kind for kind, words in _KIND_KEYWORDS.items() if any(w in s for w in words)]
            if not kinds:
                return None
        else:
            kinds = [declared] if isinstance(declared, str) else declared
            if not isinstance(kinds, list) or not kinds or any(k not in _TYPES for k in kinds):
                raise _refuse(path, f"has 'type' {declared!r}; use one of {', '.join(_TYPES)} or a list of them")
        if "integer" in kinds and "number" in kinds:
            kinds = [k for k in kinds if k != "integer"]
        return list(dict.fromkeys(kinds))

    def typed(self, kind: str, s: Mapping[str, Any], path: str, hint: str) -> str:
        if kind == "null":
            return '"null"'
        if kind == "boolean":
            return "json-bool"
        if kind == "string":
            return self.string(s, path, hint)
        if kind in ("integer", "number"):
            return self.number(s, path, hint, integer=kind == "integer")
        if kind == "array":
            return self.array(s, path, hint)
        return self.object(s, path, hint)

    def values(self, s: Mapping[str, Any], path: str, hint: str) -> str:
        others = [k for k in s if k not in ("enum", "const", "type")]
        if others:
            raise _refuse(
                path,
                f"combines 'enum'/'const' with {others[0]!r}; list only the values you want in 'enum'",
            )
        if "enum" in s:
            if not isinstance(s["enum"], list):
                raise _refuse(path, "has an 'enum' that is not a list")
            values = list(s["enum"])
        else:
            values = [s["const"]]
        if "const" in s:
            values = [v for v in values if _same_json(v, s["const"])]
        kinds = self.declared_kinds({k: v for k, v in s.items() if k == "type"}, path)
        if kinds is not None:
            allowed = set(kinds) | ({"integer"} if "number" in kinds else set())
            values = [v for v in values if _kind_of(v) in allowed]
        if not values:
            raise _refuse(path, "allows no value: no listed value of 'enum'/'const' has the declared type")
        texts = list(dict.fromkeys(_literal(_json_text(v, path)) for v in values))
        return self.rule(hint, " | ".join(texts)) if len(texts) > 1 else texts[0]

    # --- references and combinations -----------------------------------------------------------

    def resolve(self, ref: Any, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _refuse(path, f"refers to {ref!r}; only references inside the schema ('#/$defs/Name') work")
        target = self.document
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise _refuse(path, f"refers to {ref!r}, which is not in the schema; add it under '$defs'")
        return target

    def ref(self, ref: str, path: str) -> str:
        if ref in self.refs:
            if self.open_refs.get(ref) == self.depth:
                raise _refuse(path, f"refers to {ref!r} inside itself before any '{{' or '['; no value can end")
            return self.refs[ref]
        target = self.resolve(ref, path)
        name = self.fresh(ref.rsplit("/", 1)[-1] if ref != "#" else "root-ref")
        self.refs[ref] = name
        self.open_refs[ref] = self.depth
        try:
            self.rules[name] = self.visit(target, ref, name)
        finally:
            del self.open_refs[ref]
        return name

    def flat(self, schema: Any, path: str) -> Any:
        """``schema`` with its ``$ref`` and ``allOf`` resolved at the top (for merging and comparing)."""
        if not isinstance(schema, Mapping):
            return schema
        s = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
        if "$ref" in s:
            ref = s.pop("$ref")
            if not isinstance(ref, str) or ref in self.merging:
                raise _refuse(path, f"refers to {ref!r} inside itself in an 'allOf'; no value can end")
            self.merging.add(ref)
            try:
                target = self.flat(self.resolve(ref, path), ref)
                return self.flat({"allOf": [target, s]}, path) if s else target
            finally:
                self.merging.discard(ref)
        if "allOf" in s:
            return self.merge_all(s, path)
        return s

    def merge_all(self, s: Mapping[str, Any], path: str) -> Any:
        """An ``allOf`` as one schema: one branch as it is, object branches with their properties merged."""
        branches = s["allOf"]
        if not isinstance(branches, list) or not branches:
            raise _refuse(path, "has an 'allOf' that is not a non-empty list")
        rest = {k: v for k, v in s.items() if k != "allOf"}
        flat = [self.flat(b, f"{path}/allOf/{i}") for i, b in enumerate([*branches, rest] if rest else branches)]
        flat = [b for b in flat if b is not True and b != {}]
        if any(b is False for b in flat):
            raise _refuse(path, "has an 'allOf' with a false branch: no value is allowed")
        if len(flat) <= 1:
            return flat[0] if flat else True
        object_words = {"type", "properties", "required", "additionalProperties"}
        for b in flat:
            if not isinstance(b, Mapping) or set(b) - object_words or b.get("type", "object") != "object":
                raise _refuse(
                    path,
                    "has an 'allOf' of schemas that are not all plain objects; vlmkit merges objects' properties, "
                    "so write the combined schema out as one",
                )
        properties: dict[str, list[Any]] = {}
        required: list[str] = []
        for b in flat:
            for name, sub in dict(b.get("properties") or {}).items():
                properties.setdefault(name, []).append(sub)
            required += [r for r in b.get("required") or () if r not in required]
        extra: list[Any] = []
        for b in flat:
            more = b.get("additionalProperties")
            if more is None or more is True:
                continue
            extra.append(more)
            own = set(b.get("properties") or ())
            for name in [n for n in properties if n not in own]:
                if more is False:
                    if name in required:
                        raise _refuse(path, f"has an 'allOf' that both requires and forbids {name!r}")
                    del properties[name]
                else:
                    properties[name].append(more)
        merged: dict[str, Any] = {
            "type": "object",
            "properties": {n: subs[0] if len(subs) == 1 else {"allOf": subs} for n, subs in properties.items()},
            "required": required,
        }
        if extra:
            merged["additionalProperties"] = (
                False if False in extra else extra[0] if len(extra) == 1 else {"allOf": extra}
            )
        return merged

    def union(self, s: Mapping[str, Any], path: str, hint: str) -> str:
        word = "anyOf" if "anyOf" in s else "oneOf"
        if "anyOf" in s and "oneOf" in s:
            raise _refuse(path, "has both 'anyOf' and 'oneOf'; nest one inside an 'allOf' branch of the other")
        branches = s[word]
        if not isinstance(branches, list) or not branches:
            raise _refuse(path, f"has a {word!r} that is not a non-empty list")
        if word == "anyOf":
            branches = _numbers_over_free_strings(branches)
        rest = {k: v for k, v in s.items() if k != word}
        if rest:
            branches = [{"allOf": [b, rest]} for b in branches]
        if word == "oneOf":
            self.check_apart(branches, path)
        parts: list[str] = []
        first_error: InvalidSettingError | None = None
        for i, branch in enumerate(branches):
            saved = (dict(self.rules), dict(self.names), dict(self.refs), self.depth)
            try:
                parts.append(self.visit(branch, f"{path}/{word}/{i}", f"{hint}-{i}"))
            except InvalidSettingError as exc:
                if word == "oneOf":
                    raise
                # a branch left out only narrows what the reply may be: still valid against the schema
                self.rules, self.names, self.refs, self.depth = saved
                first_error = first_error or exc
        if not parts:
            assert first_error is not None
            raise first_error
        parts = list(dict.fromkeys(parts))
        return self.rule(hint, " | ".join(parts)) if len(parts) > 1 else parts[0]

    def kinds(self, schema: Any, path: str) -> set[str]:
        """The JSON types a value valid against ``schema`` may have (integers count as numbers)."""
        every = {"object", "array", "string", "number", "boolean", "null"}
        try:
            s = self.flat(schema, path)
        except InvalidSettingError:
            return every
        if s is True or s == {}:
            return every
        if not isinstance(s, Mapping):
            return set()
        for word in ("anyOf", "oneOf"):
            if word in s and isinstance(s[word], list):
                return set().union(*(self.kinds(b, path) for b in s[word]))
        if "enum" in s or "const" in s:
            values = s["enum"] if isinstance(s.get("enum"), list) else [s.get("const")]
            return {"number" if _kind_of(v) == "integer" else _kind_of(v) for v in values}
        declared = self.declared_kinds(s, path)
        return every if declared is None else {"number" if k == "integer" else k for k in declared}

    def tags(self, schema: Any, path: str) -> dict[str, list[Any]]:
        """Required properties of an object schema whose values are fixed by 'const' or 'enum'."""
        s = self.flat(schema, path)
        if not isinstance(s, Mapping):
            return {}
        out: dict[str, list[Any]] = {}
        for name, sub in dict(s.get("properties") or {}).items():
            sub = self.flat(sub, path)
            if name in (s.get("required") or ()) and isinstance(sub, Mapping):
                if "const" in sub:
                    out[name] = [sub["const"]]
                elif isinstance(sub.get("enum"), list):
                    out[name] = list(sub["enum"])
        return out

    def check_apart(self, branches: list[Any], path: str) -> None:
        """Refuse a ``oneOf`` whose branches might both match one value (the reply would then be invalid)."""
        kinds = [self.kinds(b, path) for b in branches]
        for i in range(len(branches)):
            for j in range(i + 1, len(branches)):
                shared = kinds[i] & kinds[j]
                if not shared:
                    continue
                if shared == {"object"}:
                    a, b = self.tags(branches[i], path), self.tags(branches[j], path)
                    if any(not any(_same_json(x, y) for x in a[name] for y in b[name]) for name in set(a) & set(b)):
                        continue
                raise _refuse(
                    path,
                    f"has 'oneOf' branches {i} and {j} that one value could both match, and then it would match "
                    "neither 'oneOf'; use 'anyOf', or tell object branches apart with a required 'const' property",
                )

    # --- types ----------------------------------------------------------------------------------

    def string(self, s: Mapping[str, Any], path: str, hint: str) -> str:
        low, high = s.get("minLength", 0), s.get("maxLength")
        for word, value in (("minLength", low), ("maxLength", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise _refuse(path, f"has {word!r} {value!r}; it must be a whole number >= 0")
        if "format" in s:
            fmt = s["format"]
            if fmt not in _FORMATS:
                raise _refuse(
                    path,
                    f"has 'format' {fmt!r}, which vlmkit cannot enforce in a grammar; it enforces "
                    f"{', '.join(_FORMATS)}: declare the field as a plain string (str, not EmailStr or HttpUrl) "
                    "and check it after parsing",
                )
            if "minLength" in s or "maxLength" in s:
                raise _refuse(path, "has 'format' together with 'minLength'/'maxLength'; keep only the format")
            return self.rule(f"{hint}-{fmt}", f'"\\"" {_FORMATS[fmt]} "\\""')
        if high is not None and high < low:
            raise _refuse(path, f"allows no string: 'maxLength' {high} is below 'minLength' {low}")
        if low == 0 and high is None:
            return "json-string"
        count = f"{{{low},}}" if high is None else f"{{{low}}}" if low == high else f"{{{low},{high}}}"
        return self.rule(hint, f'"\\"" json-char{count} "\\""')

    def bound(self, s: Mapping[str, Any], word: str, path: str) -> _Bound | None:
        """The tighter of ``minimum``/``exclusiveMinimum`` (or the maxima), draft 4's boolean form too."""
        plain, strict = s.get(word), s.get("exclusive" + word[0].upper() + word[1:])
        found: list[_Bound] = []
        for value, exclusive in ((plain, strict is True), (None if isinstance(strict, bool) else strict, True)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _refuse(path, f"has a bound {value!r} that is not a finite number")
            found.append(_Bound(Fraction(value), exclusive))
        if not found:
            return None
        sign = 1 if word == "minimum" else -1
        return max(found, key=lambda b: (sign * b.value, b.exclusive))

    def number(self, s: Mapping[str, Any], path: str, hint: str, *, integer: bool) -> str:
        lo, hi = self.bound(s, "minimum", path), self.bound(s, "maximum", path)
        if lo is None and hi is None:
            return "json-int" if integer else "json-number"
        # the integers inside the bounds
        first = None if lo is None else math.floor(lo.value) + 1 if lo.exclusive else math.ceil(lo.value)
        last = None if hi is None else math.ceil(hi.value) - 1 if hi.exclusive else math.floor(hi.value)
        if first is not None and last is not None and first > last and integer:
            raise _refuse(path, "allows no integer between its 'minimum' and 'maximum'")
        if integer:
            return self.rule(hint, _integers(first, last))
        for b in (lo, hi):
            if b is not None and b.value.denominator != 1:
                raise _refuse(
                    path,
                    f"bounds a number by {float(b.value)!r}; vlmkit enforces bounds of numbers only at whole "
                    "numbers: use a whole-number bound (or an integer type) and check the rest after parsing",
                )
        digits = max(len(str(abs(int(b.value)))) for b in (lo, hi) if b is not None)
        if digits >= _EXACT_DIGITS:
            raise _refuse(path, f"bounds a number at {digits} digits; doubles keep only {_EXACT_DIGITS} apart")
        if lo is not None and hi is not None and (lo.value > hi.value or (lo.value == hi.value and first != last)):
            raise _refuse(path, "allows no number between its 'minimum' and 'maximum'")
        low = None if lo is None else int(lo.value)
        high = None if hi is None else int(hi.value)
        int_digits = max(digits, 9) if lo is None or hi is None else digits
        frac = max(1, _EXACT_DIGITS - int_digits)
        any_frac = f'( "." [0-9]{{1,{frac}}} )?'
        nonzero_frac = f'"." [0-9]{{0,{frac - 1}}} [1-9]'
        zero_frac = f'( "." "0"{{1,{frac}}} )?'
        # A number I.F lies in [I, I+1): the whole integers allowed are first..last; the open
        # interval (I, I+1) is inside the bounds iff low <= I and I + 1 <= high (bounds are whole).
        parts = []
        for sign, exact, open_ in (
            ("", _span(first, last, 0), _span(low, None if high is None else high - 1, 0)),
            (
                '"-" ',
                _span(None if last is None else -last, None if first is None else -first, 1),
                _span(None if high is None else -high, None if low is None else -low - 1, 0),
            ),
        ):
            for span, tail in (
                (_meet(exact, open_), any_frac),
                *((m, nonzero_frac) for m in _minus(open_, exact)),
                *((m, zero_frac) for m in _minus(exact, open_)),
            ):
                if span is not None:
                    parts.append(f"{sign}{_naturals(span, int_digits)} {tail}")
        if not parts:
            raise _refuse(path, "allows no number between its 'minimum' and 'maximum'")
        return self.rule(hint, " | ".join(parts))

    def array(self, s: Mapping[str, Any], path: str, hint: str) -> str:
        items = s.get("items", True)
        prefix = s.get("prefixItems", [])
        if isinstance(items, list):  # draft 7's tuple form
            prefix, items = items, s.get("additionalItems", True)
        if not isinstance(prefix, list):
            raise _refuse(path, "has 'prefixItems' that is not a list")
        low, high = s.get("minItems", 0), s.get("maxItems")
        for word, value in (("minItems", low), ("maxItems", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise _refuse(path, f"has {word!r} {value!r}; it must be a whole number >= 0")
        if items is False:
            high = len(prefix) if high is None else min(high, len(prefix))
        if high is not None and high < low:
            raise _refuse(path, f"allows no array: at most {high} items, but 'minItems' is {low}")
        self.depth += 1
        try:
            slots = [self.visit(p, f"{path}/prefixItems/{i}", f"{hint}-{i}") for i, p in enumerate(prefix)]
            more = self.visit(items, f"{path}/items", f"{hint}-item") if items is not False else ""
        finally:
            self.depth -= 1
        if high == 0:
            return '"[" ws "]"'
        # after item i (i >= 1 items written): what may follow
        tail = ""
        if more and (high is None or high > len(slots)):
            need = max(0, low - max(len(slots), 1))
            limit = "" if high is None else high - max(len(slots), 1)
            count = f"{{{need},{limit}}}" if (need, limit) != (0, "") else "*"
            if count != "{0,0}":
                tail = f'( "," ws {more} ws ){count}'
        for i in range(len(slots) - 1, 0, -1):
            if high is not None and i >= high:
                continue
            step = f'"," ws {slots[i]} ws {tail}'.strip()
            tail = step if i < low else f"( {step} )?"
        first = slots[0] if slots else more
        body = f"{first} ws {tail}".strip()
        return self.rule(hint, f'"[" ws {body} "]"' if low > 0 else f'"[" ws ( {body} )? "]"')

    def object(self, s: Mapping[str, Any], path: str, hint: str) -> str:
        properties = s.get("properties") or {}
        required = s.get("required") or []
        extra = s.get("additionalProperties")
        if not isinstance(properties, Mapping):
            raise _refuse(path, "has 'properties' that is not an object")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise _refuse(path, "has 'required' that is not a list of names")
        if not properties and not required and extra in (None, True):
            return "json-object"
        declared = dict(properties)
        for name in required:
            if name not in declared:
                if extra is False:
                    raise _refuse(path, f"requires {name!r} but forbids any property it does not declare")
                declared[name] = True if extra is None else extra
        self.depth += 1
        try:
            members: list[tuple[str, bool]] = []
            for name, sub in declared.items():
                if sub is False:
                    if name in required:
                        raise _refuse(path, f"requires {name!r} but its schema is false")
                    continue
                value = self.visit(sub, f"{path}/properties/{name}", f"{hint}-{name}")
                members.append((f'{_literal(_json_text(name, path))} ws ":" ws {value} ws', name in required))
            other = ""
            if extra not in (None, False):
                value = self.visit(extra, f"{path}/additionalProperties", f"{hint}-extra")
                other = f'{self.other_key(list(declared), hint)} ws ":" ws {value} ws'
        finally:
            self.depth -= 1
        # the members in order, each optional one may be left out; commas only between them
        after = f'( "," ws {other} )*' if other else ""  # after something was written
        start: tuple[str, bool] = (f'{other} ( "," ws {other} )*', True) if other else ("", True)
        for i in range(len(members) - 1, -1, -1):
            member, needed = members[i]
            if i > 0 and not needed and after:
                after = self.rule(f"{hint}-after-{i}", after)
            rest = f"{member} {after}".strip()
            if needed:
                start = (rest, False)
            elif start[0]:
                start = (f"( {rest} | {start[0]} )", start[1])
            else:
                start = (rest, True)
            after = f'"," ws {member} {after}'.strip() if needed else f'( "," ws {member} )? {after}'.strip()
        body, can_be_empty = start
        if not body:
            return self.rule(hint, '"{" ws "}"')
        return self.rule(hint, f'"{{" ws ( {body} )? "}}"' if can_be_empty else f'"{{" ws {body} "}}"')

    def other_key(self, names: list[str], hint: str) -> str:
        """A JSON string that is none of ``names`` (so no key repeats a declared property).

        Without escapes: ``"\\u0061"`` is the key ``"a"`` and would slip past a comparison of characters.
        """
        if not names:
            return "json-string"
        plain = _NOT_RAW

        def node(prefix: str) -> str:
            nexts = sorted(
                {n[len(prefix)] for n in names if n.startswith(prefix) and len(n) > len(prefix)} - _NOT_PLAIN
            )
            parts = [f"[^{plain}{''.join(_class_char(c) for c in nexts)}] [^{plain}]* " + '"\\""']
            parts += [f"{_literal(c)} {node(prefix + c)}" for c in nexts]
            if prefix not in names:
                parts.append('"\\""')
            return _alternatives(parts)

        return self.rule(f"{hint}-key", f'"\\"" {node("")}')


def _numbers_over_free_strings(branches: Sequence[Any]) -> Sequence[Any]:
    """``[number, string]`` (nothing but annotations beside the types) narrowed to its number branch."""
    plain = [{k: v for k, v in b.items() if k not in _ANNOTATIONS} if isinstance(b, Mapping) else b for b in branches]
    if len(plain) == 2 and {"type": "number"} in plain and {"type": "string"} in plain:
        return [branches[plain.index({"type": "number"})]]
    return branches
