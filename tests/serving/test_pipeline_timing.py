"""Each round's duration is reported: on its Layer and, with the final answer's, on the answer."""

from __future__ import annotations

from serving.pipeline import AnswerDone, LayerDone, Pipeline
from tests.fakes import ScriptedBackend
from tests.serving.test_pipeline import CONVERSATION, params

DELAY = 0.02


async def test_run_reports_each_rounds_duration() -> None:
    backend = ScriptedBackend(delay=DELAY)  # each call takes at least DELAY
    [answer] = await Pipeline(backend).run(CONVERSATION, params(3, 2))
    assert len(answer.seconds_by_round) == len(answer.usage_by_round) == 3
    assert [layer.seconds for layer in answer.layers] == answer.seconds_by_round[:2]
    assert all(seconds >= DELAY for seconds in answer.seconds_by_round)


async def test_stream_reports_each_rounds_duration() -> None:
    backend = ScriptedBackend(delay=DELAY)  # each streamed word, too
    events = [event async for event in Pipeline(backend).stream(CONVERSATION, params(3, 2), n=2, budget=None)]
    for index in (0, 1):
        layers = [e.layer for e in events if isinstance(e, LayerDone) and e.index == index]
        [done] = [e for e in events if isinstance(e, AnswerDone) and e.index == index]
        assert done.seconds_by_round[:2] == [layer.seconds for layer in layers]
        words = len(backend.reply(backend.calls[-1], 0).split())
        assert len(done.seconds_by_round) == 3 and done.seconds_by_round[2] >= DELAY * words
        assert all(seconds >= DELAY for seconds in done.seconds_by_round)
