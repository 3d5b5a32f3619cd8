"""Tool calls on the embedded engine (the generated test model, real llama.cpp): a required call is
constrained by a grammar to a declared tool with valid arguments; the tools, past calls and results
(with their images) are shown through the chat template; a reply's ``<tool_call>`` blocks are read."""

from __future__ import annotations

import json

import jsonschema
import pytest

from vlmkit.chat import Chat
from vlmkit.engine import Engine
from vlmkit.engine.prompt import ChatTemplate
from vlmkit.engine.synthetic import CHATML_TEMPLATE
from vlmkit.engine.tool_calls import parse_calls
from vlmkit.errors import InvalidSettingError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig, StopReason
from vlmkit.tools import ToolCall, ToolChoice, ToolDefinition

ZOOM = ToolDefinition(
    "zoom",
    {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]},
    "Zoom into the image at a point.",
)
LABEL = ToolDefinition(
    "label", {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}, "Label it."
)


def asked(image: ImageHandle) -> Chat:
    chat = Chat("You look at screenshots.")
    chat.add_user_message("Where is the cat?", images=[image])
    return chat


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice.forced("label")])
def test_a_required_call_is_a_declared_tool_with_valid_arguments(
    engine: Engine, hopper: ImageHandle, choice: ToolChoice
) -> None:
    fragments: list[object] = []
    config = PredictionConfig(temperature=0, max_tokens=200, tools=[ZOOM, LABEL], tool_choice=choice)
    result = engine.respond("tiny", asked(hopper), config, on_fragment=fragments.append)
    assert result.stats.stop_reason is StopReason.TOOL_CALLS
    (call,) = result.tool_calls
    tool = {"zoom": ZOOM, "label": LABEL}[call.name]
    assert choice.name is None or call.name == choice.name
    jsonschema.validate(json.loads(call.arguments), dict(tool.parameters))
    assert call.id.startswith("call_") and result.content == "" and fragments == []


def test_a_tool_results_image_is_in_the_prompt(engine: Engine, hopper: ImageHandle, rocket: ImageHandle) -> None:
    chat = asked(hopper)
    call = ToolCall("call_1", "zoom", '{"x": 1, "y": 2}')
    chat.add_tool_calls([call])
    chat.add_tool_result(call, "the zoomed view", images=[rocket])
    result = engine.respond("tiny", chat, PredictionConfig(temperature=0, max_tokens=4, tools=[ZOOM]))
    assert len(result.stats.image_sizes) == 2  # the user's image and the tool's


def test_a_template_that_knows_no_tools_gets_them_in_text() -> None:
    chat = Chat("Be brief.")
    chat.add_user_message("Where?")
    call = ToolCall("call_1", "zoom", '{"x": 1, "y": 2}')
    chat.add_tool_calls([call])
    chat.add_tool_result(call, "found it")
    text = ChatTemplate(CHATML_TEMPLATE).render(chat, "<img>", [ZOOM]).text
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou may call one or more functions")
    assert '<tools>\n{"type": "function", "function": {"name": "zoom", "parameters": ' in text
    assert '<|im_start|>assistant\n\n<tool_call>\n{"name": "zoom", "arguments": {"x": 1, "y": 2}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\nfound it\n</tool_response><|im_end|>" in text


def test_a_template_that_knows_tools_gets_them_as_values() -> None:
    source = (
        "{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}"
        "{% if m.role == 'tool' %}({{ m.name }}){% endif %}{% endfor %}"
    )
    chat = Chat()
    chat.add_user_message("Where?")
    call = ToolCall("call_1", "zoom", '{"x": 1, "y": 2}')
    chat.add_tool_calls([call])
    chat.add_tool_result(call, "found it")
    text = ChatTemplate(source).render(chat, "<img>", [ZOOM]).text
    assert text == '[zoom]<user>Where?<assistant>zoom{"x": 1, "y": 2}<tool>found it(zoom)'


def test_calls_the_model_chose_are_read_from_its_reply() -> None:
    reply = 'Let me look.\n<tool_call>\n{"name": "zoom", "arguments": {"x": 3, "y": 4}}\n</tool_call>'
    content, calls = parse_calls(reply, [ZOOM])
    assert content == "Let me look." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("zoom", {"x": 3, "y": 4})
    ]
    unknown = '<tool_call>{"name": "rm", "arguments": {}}</tool_call>'
    assert parse_calls(unknown, [ZOOM]) == (unknown, [])


def test_n_above_one_is_refused_by_the_engine(engine: Engine) -> None:
    with pytest.raises(InvalidSettingError) as err:
        engine.respond("tiny", "Hi", PredictionConfig(n=2))
    assert err.value.location == "n"
    assert err.value.message == "one prediction makes one choice, not n=2; ask for each choice in turn"


def test_a_chosen_call_is_not_streamed_as_text() -> None:
    from vlmkit.engine.tool_calls import HeldCalls
    from vlmkit.prediction import PredictionFragment

    shown: list[str] = []
    held = HeldCalls(lambda f: shown.append(f.content))
    for piece in ["Let me", " look.<tool", "_call>\n{", '"name": "zoom"}', "</tool_call>"]:
        held(PredictionFragment(piece))
    held.flush()
    assert "".join(shown) == "Let me look."
    shown.clear()
    held = HeldCalls(lambda f: shown.append(f.content))
    for piece in ["a <to", "ol> b <tool_"]:
        held(PredictionFragment(piece))
    held.flush()
    assert "".join(shown) == "a <tool> b <tool_"  # held only while it could be a call, then shown
