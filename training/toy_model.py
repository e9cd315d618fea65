"""The toy recipe's tokenizer and model: trained and built here, nothing from the hub.

The tokenizer is byte-level BPE with every digit a token of its own (a digit slip is one
token, and a draft as long in tokens as its answer), trained on the prompts the service
renders, so serving/format.py's long aggregation template costs a few dozen tokens. The
model is a small random-weight Llama with head_dim 64, which vLLM's CPU attention needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.format import Message, aggregator_messages, proposer_messages
from training.tasks import ToyTask
from training.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS


def _corpus(task: ToyTask, lines: int, seed: int) -> list[str]:
    """Message texts as training and serving render them: proposer and aggregator system
    messages, questions and answers."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(lines):
        problem, *others = task.training_problems(rng.randint(2, 9), rng.randrange(2**32))
        drafts = [other.answer for other in others]
        messages: list[Message] = [*aggregator_messages(problem.conversation, drafts),
                                   *proposer_messages(problem.conversation)]
        texts += [m["content"] for m in messages] + [problem.answer]
    return texts


def build_tokenizer(path: str | Path, task: ToyTask, *, vocab_size: int = 1024, seed: int = 0) -> Any:
    """Train and save the toy's tokenizer (with training.tiny's chat template); returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Digits are split off one by one before anything else; the rest is byte-level BPE
    # without the usual word-splitting regex, so frequent phrases of the aggregation
    # template become single tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus(task, 400, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|bos|>",  # type: ignore[no-untyped-call]
                                   eos_token="<|eos|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


@dataclass(frozen=True)
class ModelShape:
    """The toy model's size."""

    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    """Attention heads of 64 dimensions each (more than hidden_size / 64: measured, 4 heads
    escape the early loss plateau of this task in half the steps of 2)."""
    max_positions: int = 2048
    """Context the checkpoint declares (the service's CPU flags ask for 2048). Training sees at most
    ~170 tokens (8 drafts); the aggregation prompt with 16 drafts of 8 digits is ~250."""


def build_model(path: str | Path, tokenizer: Any, shape: ModelShape, *, seed: int = 0) -> Path:
    """Save a random-weight Llama for `tokenizer` (head_dim 64) with the tokenizer to `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, intermediate_size=4 * shape.hidden_size,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, head_dim=64,
        num_key_value_heads=shape.heads, max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=[tokenizer.eos_token_id, end_of_turn],
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
