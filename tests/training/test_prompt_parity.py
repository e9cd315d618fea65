"""What the model is trained on is what the service sends it, token for token; the loss falls on the answer only.

Training side: the rows go through TRL's own SFTTrainer preparation (tokenization with
the chat template, labels). Service side: the pipeline's engine calls (captured on a
scripted backend) rendered by VLLMBackend's own prompt code with the same tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from serving.backends.base import Sampling
from serving.backends.vllm import VLLMBackend
from serving.backends.vllm_engine import EngineConfig
from serving.format import AggregationFormat, Message, aggregator_messages, proposer_messages
from serving.pipeline import Pipeline, PipelineParams
from tests.fakes import Call, ScriptedBackend
from training.config import TrainConfig
from training.rows import aft_example, sft_example, write_jsonl
from training.train import build_trainer

# Multi-turn with a client system prompt: the folding rules of serving/format.py all apply.
CONVERSATION: list[Message] = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
]
DRAFTS = ["six", "It is 6.", "seven"]
TARGET = "Three plus three is six."


def reply(call: Call, i: int) -> str:
    return DRAFTS[i] if call.role == "proposer" else "final"


async def served_messages(rounds: int, fmt: AggregationFormat = AggregationFormat.PAPER) -> list[Message]:
    """The messages of the final engine call the pipeline makes for CONVERSATION."""
    backend = ScriptedBackend(reply=reply)
    params = PipelineParams(proposals=len(DRAFTS), rounds=rounds, draft_sampling=Sampling(0.7, 0.95),
                            final_sampling=Sampling(0.7, 1.0))
    await Pipeline(backend, aggregation_format=fmt).run(CONVERSATION, params)
    return backend.calls[-1].messages


@pytest.fixture(scope="module")
def trainer(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("parity")
    rows = [aft_example(CONVERSATION, DRAFTS, TARGET), sft_example(CONVERSATION, TARGET),
            aft_example(CONVERSATION[-1:], ["x"], "A much longer answer, to make the batch need padding."),
            aft_example(CONVERSATION, DRAFTS, TARGET, AggregationFormat.CONVERSATION_FIRST)]
    write_jsonl(rows, directory / "rows.jsonl")
    config = TrainConfig(model=str(tiny_model), data=str(directory / "rows.jsonl"), output_dir=str(directory / "out"),
                         use_cpu=True, bf16="false", gradient_checkpointing=False)
    return build_trainer(config)


async def service_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    backend = VLLMBackend(EngineConfig(model="unused"))
    # Rendering needs only the engine's tokenizer; no engine is started.
    backend._engine = SimpleNamespace(get_tokenizer=lambda: tokenizer)  # type: ignore[assignment]
    return await backend.prompt_ids(messages)


@pytest.mark.parametrize(("index", "rounds", "fmt"), [(0, 1, AggregationFormat.PAPER), (1, 0, AggregationFormat.PAPER),
                                                     (3, 1, AggregationFormat.CONVERSATION_FIRST)],
                         ids=["aggregator", "proposer", "conversation-first aggregator"])
async def test_training_prompt_is_the_served_prompt(trainer: Any, index: int, rounds: int,
                                                    fmt: AggregationFormat) -> None:
    served = await served_messages(rounds, fmt)
    row = trainer.train_dataset[index]
    assert row["prompt"] == served  # the same messages ...
    ids = await service_ids(trainer.processing_class, served)
    assert row["input_ids"][:len(ids)] == ids  # ... and the same tokens
    answer = trainer.processing_class.decode(row["input_ids"][len(ids):])
    assert answer == TARGET + "<|end|>\n"  # the template's end of turn follows the answer


async def test_collator_masks_every_prompt_token_and_trains_every_answer_token(trainer: Any) -> None:
    rows = [trainer.train_dataset[i] for i in range(3)]
    batch = trainer.data_collator(rows)
    for i, row in enumerate(rows):
        prompt_len = len(await service_ids(trainer.processing_class, row["prompt"]))
        length = len(row["input_ids"])
        labels, input_ids = batch["labels"][i].tolist(), batch["input_ids"][i].tolist()
        assert labels[:prompt_len] == [-100] * prompt_len
        assert labels[prompt_len:length] == input_ids[prompt_len:length]  # the whole answer, its end token too
        assert labels[length:] == [-100] * (len(labels) - length)  # padding
        assert batch["attention_mask"][i].tolist() == [1] * length + [0] * (len(labels) - length)


async def test_conversation_first_prompts_share_the_proposer_prompts_tokens(trainer: Any) -> None:
    """What an engine's prefix cache reuses, through a real chat template: the conversation-first
    aggregation prompt begins with every token of the proposer prompt (its conversation); the
    paper's begins with its drafts, so it shares no more than the template's first tokens."""
    tokenizer = trainer.processing_class
    conversation = proposer_messages(CONVERSATION)
    asked = tokenizer.apply_chat_template(conversation, tokenize=False)  # the conversation, without the
    shared = tokenizer(asked, add_special_tokens=False)["input_ids"]     # assistant turn's opening
    first = await service_ids(tokenizer, aggregator_messages(CONVERSATION, DRAFTS,
                                                             AggregationFormat.CONVERSATION_FIRST))
    paper = await service_ids(tokenizer, aggregator_messages(CONVERSATION, DRAFTS))
    assert first[:len(shared)] == shared and len(first) > len(shared)
    common = next(i for i, (a, b) in enumerate(zip(paper, shared, strict=False)) if a != b)
    assert common < len(shared) // 2
