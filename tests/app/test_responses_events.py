"""The Responses stream renderer on its own: delta events (one per token) are byte for byte the JSON
of the event, and tool calls streamed in pieces become function_call items that the OpenAI SDK's
stream accumulator (what `responses.stream()` runs) completes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState

from app.protocol import AftInfo
from app.reasoning import heading
from app.responses.events import ResponseEvents
from app.responses.protocol import ResponsesRequest
from serving.backends.base import ToolCall, Usage
from serving.live_draft import DraftDelta
from serving.pipeline import AnswerDone
from tests.app.test_responses_api import EVENT, events
from tests.fakes import MODEL


def test_delta_events_are_the_json_of_the_event() -> None:
    renderer = ResponseEvents(ResponsesRequest(model=MODEL, input="Hi"), 'resp_a"b', 7,
                              AftInfo(proposals=2, rounds=1, subset=2, answers=[]), include_proposals=False)
    renderer.opening()

    def last_event(pieces: str) -> dict[str, Any]:
        piece = pieces.split("\n\n")[-2] + "\n\n"
        sent: dict[str, Any] = json.loads(piece.split("data: ", 1)[1])
        assert piece == f"event: {sent['type']}\ndata: " + json.dumps(sent, ensure_ascii=False,
                                                                      separators=(",", ":")) + "\n\n"
        return sent

    texts = ["plain", 'quote " backslash \\ newline \n tab \t', "é ☃ \u2028 \x00 😀"]
    for draft, text in enumerate(texts):
        sent = last_event(renderer.reasoning(DraftDelta(0, 0, draft, text)))
        assert (sent["item_id"], sent["delta"]) == ('rs_a"b', heading(0, draft) + text)
    numbers = []
    for text in texts:
        sent = last_event(renderer.token(0, text))
        numbers.append(sent.pop("sequence_number"))
        assert sent == {"type": "response.output_text.delta", "item_id": 'msg_a"b', "output_index": 1,
                        "content_index": 0, "delta": text, "logprobs": []}
    assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]


@dataclass(frozen=True)
class Piece:
    """A piece of a streamed call, as serving's ToolCallDelta."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class PiecesDelta:
    index: int
    text: str
    tool_calls: tuple[Piece, ...]


def test_calls_streamed_in_pieces_are_function_call_items_the_sdk_accumulates() -> None:
    renderer = ResponseEvents(ResponsesRequest(model=MODEL, input="Hi"), "resp_1", 7,
                              AftInfo(proposals=2, rounds=1, subset=2, answers=[]), include_proposals=False)
    paris, rome = '{"city": "Paris"}', '{"city": "Rome"}'
    pieces = renderer.opening() + renderer.token(0, "Let me look.") + "".join(renderer.answer_delta(d) for d in [
        PiecesDelta(0, "", (Piece(0, "", "call_1", "get_weather"),)),
        PiecesDelta(0, "", (Piece(0, paris[:9]),)), PiecesDelta(0, "", (Piece(0, paris[9:]),)),
        PiecesDelta(0, "", (Piece(1, rome, "call_2", "get_weather"),))])
    calls = (ToolCall("call_1", "get_weather", paris), ToolCall("call_2", "get_weather", rome))
    pieces += renderer.answer_done(AnswerDone(0, "tool_calls", Usage(3, 2, 1), [Usage(1, 1, 1), Usage(2, 1, 0)],
                                              tool_calls=calls))
    pieces += renderer.closing()
    sent = events(pieces)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in sent:
        state.handle_event(EVENT.validate_python(event))
    final = state._completed_response
    assert final is not None and final.output_text == "Let me look."
    assert [(i.type, getattr(i, "call_id", None), getattr(i, "arguments", None)) for i in final.output] == [
        ("message", None, None), ("function_call", "call_1", paris), ("function_call", "call_2", rome)]
    deltas = [e["delta"] for e in sent if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == [paris[:9], paris[9:], rome]  # as they came, not joined at the end
