"""vlmkit's JSON schema grammar: every text it allows parses and validates against the schema.

Schemas are drawn by hypothesis from the constructs structured output uses (pydantic's and OpenAI's);
texts are drawn from each grammar by a random derivation walker written here over the GBNF text
itself (so what is checked is what llama.cpp is given), whose characters for a negated class
include every control character, quote and backslash. Each text must pass ``json.loads`` and
``jsonschema``; each grammar must be accepted by llama.cpp. The real engine then samples replies
on the generated test model at random seeds, and those that end must validate too.
"""

from __future__ import annotations

import datetime
import json
import random
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmkit.chat import Chat
from vlmkit.engine import Engine
from vlmkit.engine.grammar_guard import TokenTable
from vlmkit.engine.json_grammar import json_schema_grammar
from vlmkit.engine.model import LoadOptions, NativeModel
from vlmkit.errors import InvalidSettingError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig, StopReason

# --- a GBNF reader and a random walker over it ----------------------------------------------------

Node = tuple[Any, ...]


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] == " ":
            self.i += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.i] if self.i < len(self.text) else ""

    def char(self) -> int:
        """One character of a literal or class, as a code point (a class may name some past U+10FFFF)."""
        c = self.text[self.i]
        self.i += 1
        if c != "\\":
            return ord(c)
        e = self.text[self.i]
        self.i += 1
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width:
            code = int(self.text[self.i : self.i + width], 16)
            self.i += width
            return code
        return ord({"n": "\n", "t": "\t", "r": "\r"}.get(e, e))

    def alternatives(self) -> Node:
        options = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.sequence())
        return ("alt", options)

    def sequence(self) -> Node:
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.postfix(self.atom()))
        return ("seq", items)

    def atom(self) -> Node:
        c = self.peek()
        if c == '"':
            self.i += 1
            out = []
            while self.text[self.i] != '"':
                out.append(chr(self.char()))
            self.i += 1
            return ("lit", "".join(out))
        if c == "[":
            self.i += 1
            negated = self.text[self.i] == "^"
            self.i += negated
            ranges = []
            while self.text[self.i] != "]":
                lo = hi = self.char()
                if self.text[self.i] == "-" and self.text[self.i + 1] != "]":
                    self.i += 1
                    hi = self.char()
                ranges.append((lo, hi))
            self.i += 1
            return ("cls", negated, ranges)
        if c == "(":
            self.i += 1
            inner = self.alternatives()
            assert self.peek() == ")", self.text[self.i :]
            self.i += 1
            return inner
        start = self.i
        while self.i < len(self.text) and (self.text[self.i].isalnum() or self.text[self.i] == "-"):
            self.i += 1
        assert self.i > start, f"unexpected {self.text[self.i :]!r}"
        return ("ref", self.text[start : self.i])

    def postfix(self, node: Node) -> Node:
        c = self.text[self.i] if self.i < len(self.text) else ""
        if c and c in "*+?":
            self.i += 1
            return ("rep", node, 1 if c == "+" else 0, 1 if c == "?" else None)
        if c == "{":
            end = self.text.index("}", self.i)
            low, comma, high = self.text[self.i + 1 : end].partition(",")
            self.i = end + 1
            top = int(low) if not comma else int(high) if high else None
            return ("rep", node, int(low), top)
        return node


def read_grammar(text: str) -> dict[str, Node]:
    rules = {}
    for line in text.splitlines():
        name, _, body = line.partition(" ::= ")
        reader = _Reader(body)
        rules[name] = reader.alternatives()
        assert reader.peek() == "", f"rule {name} not read to its end: {body[reader.i :]!r}"
    return rules


# characters a negated class may give: all of ASCII (controls, quote and backslash among them) and more
POOL = [chr(c) for c in range(0x80)] + ["é", "ß", "\x85", "\u2028", "中", "\ufeff", "\U0001f600"]


class Walker:
    """Random texts of a grammar; past ``deep`` rule expansions it takes the shortest ways out."""

    def __init__(self, text: str, rnd: random.Random, deep: int = 25) -> None:
        self.rules = read_grammar(text)
        self.rnd, self.deep = rnd, deep
        self.cost = {name: float("inf") for name in self.rules}
        for _ in range(len(self.rules) + 2):
            for name, node in self.rules.items():
                self.cost[name] = self.least(node)

    def least(self, node: Node) -> float:
        kind = node[0]
        if kind == "alt":
            return min(self.least(n) for n in node[1])
        if kind == "seq":
            return sum(self.least(n) for n in node[1])
        if kind == "lit":
            return len(node[1])
        if kind == "cls":
            return 1
        if kind == "ref":
            return self.cost[node[1]]
        return 0.0 if node[2] == 0 else node[2] * self.least(node[1])

    def text(self) -> str:
        out: list[str] = []
        self.walk(("ref", "root"), 0, out)
        return "".join(out)

    def walk(self, node: Node, depth: int, out: list[str]) -> None:
        kind, rnd = node[0], self.rnd
        if kind == "alt":
            options = node[1]
            if depth > self.deep:
                options = [min(options, key=self.least)]
            self.walk(rnd.choice(options), depth, out)
        elif kind == "seq":
            for n in node[1]:
                self.walk(n, depth, out)
        elif kind == "lit":
            out.append(node[1])
        elif kind == "cls":
            _, negated, ranges = node
            if negated:
                out.append(rnd.choice([c for c in POOL if not any(lo <= ord(c) <= hi for lo, hi in ranges)]))
            else:
                lo, hi = rnd.choice(ranges)
                out.append(chr(rnd.randint(lo, hi)))
        elif kind == "ref":
            self.walk(self.rules[node[1]], depth + 1, out)
        else:
            _, inner, low, high = node
            most = low + 3 if high is None else high
            count = low if depth > self.deep else rnd.choice([low, most, rnd.randint(low, most)])
            for _ in range(count):
                self.walk(inner, depth, out)


# --- checking a text against a schema -------------------------------------------------------------

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    return not isinstance(value, str) or (bool(datetime.date.fromisoformat(value)) and len(value) == 10)


@FORMATS.checks("time", raises=ValueError)
def _time(value: object) -> bool:
    return not isinstance(value, str) or datetime.time.fromisoformat(value).tzinfo is not None


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.datetime.fromisoformat(value).tzinfo is not None


for _version in (None, 1, 3, 4, 5):

    @FORMATS.checks("uuid" if _version is None else f"uuid{_version}", raises=ValueError)
    def _uuid(value: object, version: int | None = _version) -> bool:
        return not isinstance(value, str) or (
            len(value) == 36 and (version is None or uuid.UUID(value).version == version) and bool(uuid.UUID(value))
        )


def assert_valid(text: str, schema: Any) -> Any:
    value = json.loads(text)  # strict: no control characters in strings
    jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(value)
    return value


# --- schemas, drawn ---------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "ab", "b", "name", 'q"uote', "back\\slash", "new\nline", "é", "中文", "x-y", ""])
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=6)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def strings(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if draw(st.booleans()):
        schema["format"] = draw(st.sampled_from(["date", "time", "date-time", "uuid", "uuid4"]))
        return schema
    low = draw(st.none() | st.integers(0, 4))
    high = draw(st.none() | st.integers(low or 0, 8))
    if low is not None:
        schema["minLength"] = low
    if high is not None:
        schema["maxLength"] = high
    return schema


@st.composite
def integers(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    bound = st.integers(-(10**6), 10**6) | st.sampled_from([0, 1, -1, 9, 10, 99, 100, 10**12])
    low, high = draw(st.none() | bound), draw(st.none() | bound)
    if low is not None and high is not None and low > high:
        low, high = high, low
    for word, value in (("inimum", low), ("aximum", high)):
        if value is not None:
            exclusive = draw(st.booleans()) and (low is None or high is None or high - low >= 2)
            schema[("exclusiveM" if exclusive else "m") + word] = value
    return schema


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    bound = st.integers(-1000, 1000) | st.sampled_from([0, 1, -1, 10**9])
    low, high = draw(st.none() | bound), draw(st.none() | bound)
    if low is not None and high is not None and low > high:
        low, high = high, low
    for word, value in (("inimum", low), ("aximum", high)):
        if value is not None:
            exclusive = draw(st.booleans()) and (low is None or high is None or high > low)
            schema[("exclusiveM" if exclusive else "m") + word] = value
    return schema


LEAVES = st.one_of(
    strings(),
    integers(),
    numbers(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.just({}),
    st.just(True),
    st.just({"type": "object"}),
    st.builds(lambda vs: {"enum": vs}, st.lists(JSON_VALUES, min_size=1, max_size=4)),
    st.builds(lambda v: {"const": v}, JSON_VALUES),
    st.builds(lambda t: {"type": [t, "null"]}, st.sampled_from(["string", "integer", "number", "boolean"])),
    st.builds(lambda s: {**s, "nullable": True}, strings()),
)


def objects(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        properties = draw(st.dictionaries(NAMES, inner, max_size=4))
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        schema["required"] = [n for n in properties if draw(st.booleans())]
        extra = draw(st.sampled_from(["absent", False, True, "schema"]))
        if extra == "schema":
            schema["additionalProperties"] = draw(inner)
        elif extra != "absent":
            schema["additionalProperties"] = extra
        if draw(st.booleans()) and extra is not False:
            schema["required"].append("undeclared")
        return schema

    return build()


def arrays(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array"}
        if draw(st.booleans()):
            schema["prefixItems"] = draw(st.lists(inner, min_size=1, max_size=3))
        items = draw(st.sampled_from(["absent", False, "schema"]))
        if items == "schema":
            schema["items"] = draw(inner)
        elif items is False:
            schema["items"] = False
        top = len(schema.get("prefixItems", [])) if items is False else 5
        low = draw(st.none() | st.integers(0, top))
        high = draw(st.none() | st.integers(low or 0, top))
        if low is not None:
            schema["minItems"] = low
        if high is not None:
            schema["maxItems"] = high
        return schema

    return build()


def tagged_union(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A ``oneOf`` of objects told apart by a const tag, as pydantic's discriminated unions."""

    def branch(tag: str, body: Any) -> dict[str, Any]:
        return {"type": "object", "properties": {"kind": {"const": tag}, "body": body}, "required": ["kind"]}

    return st.lists(inner, min_size=2, max_size=3).map(
        lambda bodies: {"oneOf": [branch(f"k{i}", b) for i, b in enumerate(bodies)]}
    )


def typed_union(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A ``oneOf`` of branches of different types."""
    return st.tuples(strings(), arrays(inner), objects(inner)).map(lambda bs: {"oneOf": list(bs)})


def all_of(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(inner, inner).map(
        lambda ab: {
            "allOf": [
                {"type": "object", "properties": {"left": ab[0]}, "required": ["left"]},
                {"properties": {"right": ab[1]}},
            ]
        }
    )


SCHEMAS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        objects(inner),
        arrays(inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda bs: {"anyOf": bs}),
        tagged_union(inner),
        typed_union(inner),
        all_of(inner),
    ),
    max_leaves=8,
)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A drawn schema, some of its parts moved under ``$defs`` and referred to by ``$ref``."""
    defs: dict[str, Any] = {}

    def move(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties":
                out[key] = {name: move(sub) for name, sub in value.items()}
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
                out[key] = [move(sub) for sub in value]
            elif key in ("items", "additionalProperties"):
                out[key] = move(value)
            else:
                out[key] = value
        if out and draw(st.integers(0, 3)) == 0:
            name = f"D{len(defs)}"
            defs[name] = out
            return {"$ref": f"#/$defs/{name}", "description": "moved under $defs"}
        return out

    root = move(draw(SCHEMAS))
    if defs:
        root = {"$defs": defs} if root is True else {**root, "$defs": defs}
    return root


# --- the properties ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(tiny_model: tuple[Path, Path]) -> Iterator[Callable[[str], None]]:
    """Hands a grammar to llama.cpp's own parser (through the engine's sampler), as a prediction does."""
    native = NativeModel(tiny_model[0], None, LoadOptions(context_length=256, cpu_threads=1))

    def compile_(grammar: str) -> None:
        sampler = native.make_sampler(
            temperature=0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=0, grammar=grammar
        )
        native.free_sampler(sampler)

    yield compile_
    native.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema=documents(), seed=st.integers(0, 2**32))
def test_every_text_of_the_grammar_is_valid_json_of_the_schema(schema: Any, seed: int) -> None:
    try:
        grammar = json_schema_grammar(schema)
    except InvalidSettingError as exc:
        # the strategy draws only what vlmkit supports, save schemas no value can satisfy
        assert "allows no" in str(exc) or "requires" in str(exc), exc
        return
    walker = Walker(grammar, random.Random(seed))
    for _ in range(8):
        assert_valid(walker.text(), schema)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema=documents())
def test_llama_cpp_accepts_every_grammar(schema: Any, llama: Callable[[str], None]) -> None:
    try:
        grammar = json_schema_grammar(schema)
    except InvalidSettingError:
        return
    llama(grammar)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(schema=documents(), seed=st.integers(0, 2**31))
def test_replies_of_the_engine_that_end_are_valid(engine_once: Engine, schema: Any, seed: int) -> None:
    try:
        json_schema_grammar(schema)
    except InvalidSettingError:
        return
    config = PredictionConfig(seed=seed, max_tokens=200, temperature=1.0, response_format=schema)
    result = engine_once.respond("tiny", "JSON", config)
    if result.stats.stop_reason is StopReason.EOS_FOUND:
        assert_valid(result.content, schema)


def test_replies_are_well_formed_utf8_of_the_length_the_grammar_counted(engine_once: Engine) -> None:
    """The random model has byte tokens: without the grammar guard it wrote overlong and out-of-range
    UTF-8 that llama.cpp counted as one character each and a strict decoder as several."""
    schema = {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 4}, "maxItems": 6}
    ended = 0
    for seed in range(40):
        config = PredictionConfig(seed=seed, max_tokens=120, temperature=1.0, response_format=schema)
        result = engine_once.respond("tiny", "Strings", config)
        if result.stats.stop_reason is StopReason.EOS_FOUND:
            ended += 1
            assert "\ufffd" not in result.content, result.content
            assert_valid(result.content, schema)
    assert ended >= 20


def test_the_token_table_bans_what_llama_cpp_and_strict_utf8_read_differently() -> None:
    pieces = [b"a", b"\xc0\xa2", b"x\xe0\x80", b"\xed\xa0\x80", b"\xf4\x90", b"\xf5", b"", b"", b"b\xe0", b"\xa0"]
    table = TokenTable.build(pieces, [False] * 7 + [True, False, False])
    assert table.banned.tolist() == [False, True, True, True, True, True, True, False, False, False]
    assert table.lead[8] == 0xE0 and table.lead[0] == -1
    assert table.after[0xE0][9] and not table.after[0xE0][0]  # after E0 only A0-BF, or the end
    assert table.after[0xE0][7] and table.empty[7]


@pytest.fixture(scope="module")
def engine_once(tiny_model: tuple[Path, Path]) -> Iterator[Engine]:
    e = Engine(default_ttl=None, load_options=LoadOptions(cpu_threads=1))
    e.register("tiny", tiny_model[0], tiny_model[1])
    yield e
    e.close()


# --- pydantic models, as the SDK's users write them --------------------------------------------------


class Photo(pydantic.BaseModel):
    subject: str
    people: int
    outdoors: bool


class Colour(str, Enum):
    RED = "red"
    GREEN = "green"


class Address(pydantic.BaseModel):
    street: str
    city: str = "Paris"
    zip: str | None = None


class Person(pydantic.BaseModel):
    name: Annotated[str, pydantic.Field(min_length=1, max_length=12)]
    age: Annotated[int, pydantic.Field(ge=0, le=130)]
    score: Annotated[float, pydantic.Field(ge=0, le=1)]
    ratio: Annotated[float, pydantic.Field(gt=-1, lt=1)]
    home: Address
    others: list[Address] = []
    colour: Colour
    mood: Literal["calm", "busy"]
    tags: dict[str, int]
    pair: tuple[int, str]
    born: datetime.date
    seen: datetime.datetime
    at: datetime.time
    id: uuid.UUID
    key: pydantic.UUID4
    price: Decimal
    note: str | None


class Tree(pydantic.BaseModel):
    label: str
    children: list[Tree] = []


class Cat(pydantic.BaseModel):
    pet: Literal["cat"]
    lives: int


class Dog(pydantic.BaseModel):
    pet: Literal["dog"]
    good: bool


class Owner(pydantic.BaseModel):
    animal: Annotated[Cat | Dog, pydantic.Field(discriminator="pet")]
    extra: Cat | Dog | None = None


class Loose(pydantic.BaseModel, extra="allow"):
    known: int


@pytest.mark.parametrize("model", [Photo, Person, Tree, Owner, Loose])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_texts_of_a_pydantic_models_grammar_validate_into_the_model(model: type[pydantic.BaseModel], seed: int) -> None:
    schema = model.model_json_schema()
    walker = Walker(json_schema_grammar(schema), random.Random(seed))
    for _ in range(6):
        text = walker.text()
        assert_valid(text, schema)
        model.model_validate_json(text)


def test_openai_strict_schema_of_a_model_works() -> None:
    from openai.lib._pydantic import to_strict_json_schema

    schema = to_strict_json_schema(Person)
    walker = Walker(json_schema_grammar(schema), random.Random(7))
    for _ in range(20):
        Person.model_validate_json(walker.text())


def test_the_readme_pydantic_example_parses_20_times_in_a_row(
    engine: Engine, image_chat: Callable[..., Chat], hopper: ImageHandle
) -> None:
    """The issue's 'done when': a pydantic response_format on the demo model, 20 seeds, no parse failure."""
    for seed in range(20):
        result = engine.respond("tiny", image_chat(hopper), PredictionConfig(seed=seed, response_format=Photo))
        assert result.stats.stop_reason is StopReason.EOS_FOUND, (seed, result.stats)
        Photo.model_validate_json(result.content)


# --- what the grammar looks like ------------------------------------------------------------------------


def test_strings_have_no_raw_control_characters_and_whitespace_is_bounded() -> None:
    grammar = read_grammar(json_schema_grammar({"type": "object", "properties": {"s": {"type": "string"}}}))
    char = grammar["json-char"][1][0][1][0]  # the first alternative's class
    assert char[0] == "cls" and char[1] is True
    assert (0x00, 0x1F) in char[2] and (ord('"'), ord('"')) in char[2] and (ord("\\"), ord("\\")) in char[2]
    assert (0xD800, 0xDFFF) in char[2] and (0x110000, 0x7FFFFFFF) in char[2]  # no surrogates, nothing past U+10FFFF
    ws = json_schema_grammar({"type": "boolean"})
    assert "ws" not in ws  # a bare value: no whitespace at all
    text = json_schema_grammar({"type": "array"})
    assert 'ws ::= ( " " | "\\n" [ \\t]{0,20} )?' in text.splitlines()


def test_declared_properties_come_once_in_order_and_no_extra_key_repeats_one() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "ab": {"type": "integer"}},
        "additionalProperties": {"type": "string"},
    }
    walker = Walker(json_schema_grammar(schema), random.Random(3))
    for _ in range(200):
        text = walker.text()
        pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
        keys = [k for k, _ in pairs]
        declared = [k for k in keys if k in ("a", "ab")]
        assert declared in ([], ["a"], ["ab"], ["a", "ab"]), text  # once each, in order
        assert keys[: len(declared)] == declared, text  # before any other


def test_recursive_references_make_recursive_rules() -> None:
    node = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}}}
    schema = {
        "$defs": {"Node": node},
        "$ref": "#/$defs/Node",
    }
    grammar = json_schema_grammar(schema)
    assert "Node ::= " in grammar
    walker = Walker(grammar, random.Random(1), deep=12)
    for _ in range(20):
        assert_valid(walker.text(), schema)
    whole = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    walker = Walker(json_schema_grammar(whole), random.Random(2), deep=12)
    for _ in range(20):
        assert_valid(walker.text(), whole)


# --- what the grammar refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "pattern": "^a+$"}, ["'pattern'", "#", "check the value after parsing"]),
        ({"type": "array", "uniqueItems": True}, ["'uniqueItems'", "use a list instead of a set"]),
        ({"type": "number", "multipleOf": 0.5}, ["'multipleOf'", "round the value after parsing"]),
        ({"not": {"type": "string"}}, ["'not'", "check that after parsing"]),
        ({"type": "object", "patternProperties": {"^x": {}}}, ["'patternProperties'", "declare the properties"]),
        ({"type": "object", "minProperties": 1}, ["'minProperties'", "remove it from the schema"]),
        ({"properties": {"mail": {"type": "string", "format": "email"}}}, ["#/properties/mail", "'email'", "str"]),
        ({"type": "number", "minimum": 0.5}, ["0.5", "whole-number bound"]),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, ["'oneOf' branches 0 and 1", "use 'anyOf'"]),
        ({"$ref": "https://example.com/s.json"}, ["only references inside the schema"]),
        ({"$ref": "#/$defs/Gone"}, ["'#/$defs/Gone'", "not in the schema"]),
        (
            {"$defs": {"A": {"allOf": [{"$ref": "#/$defs/A"}]}}, "$ref": "#/$defs/A"},
            ["inside itself", "no value can end"],
        ),
        ({"type": "string", "minLength": 3, "maxLength": 2}, ["allows no string"]),
        ({"type": "integer", "minimum": 3, "exclusiveMaximum": 3}, ["allows no integer"]),
        ({"type": "wat"}, ["'type' 'wat'", "object, array, string"]),
        ({"type": "object", "properties": 3}, ["'properties' that is not an object"]),
        ({"type": "object", "required": ["x"], "additionalProperties": False}, ["requires 'x'", "forbids"]),
        ({"enum": ["a"], "minLength": 2}, ["'enum'/'const' with 'minLength'"]),
        ({"type": "integer", "enum": ["a", "b"]}, ["allows no value"]),
        (
            {"allOf": [{"type": "string"}, {"type": "object"}]},
            ["'allOf' of schemas that are not all plain objects", "combined schema"],
        ),
    ],
)
def test_unsupported_or_impossible_schemas_are_refused_clearly(schema: Any, words: list[str]) -> None:
    with pytest.raises(InvalidSettingError) as err:
        json_schema_grammar(schema)
    assert str(err.value).startswith("response_format: the JSON schema at #")
    for word in words:
        assert word in str(err.value)
    assert err.value.status_code == 400


def test_a_set_field_is_refused_naming_the_keyword() -> None:
    class Bag(pydantic.BaseModel):
        items: set[int]

    with pytest.raises(InvalidSettingError, match="#/properties/items uses 'uniqueItems'"):
        json_schema_grammar(Bag.model_json_schema())


def test_an_anyof_branch_vlmkit_cannot_express_is_left_out() -> None:
    schema = {"anyOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "integer"}]}
    walker = Walker(json_schema_grammar(schema), random.Random(5))
    assert all(isinstance(json.loads(walker.text()), int) for _ in range(20))


def test_a_bad_schema_is_a_bad_request_before_any_work(engine: Engine) -> None:
    with pytest.raises(InvalidSettingError, match="'pattern'") as err:
        engine.respond("tiny", "x", PredictionConfig(response_format={"type": "string", "pattern": "x"}))
    assert err.value.status_code == 400
