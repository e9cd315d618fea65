"""A tiny random-weight chat model built entirely on this machine.

Tests and the demo need a real checkpoint that vLLM can load without the hub:
a Llama with random weights, a byte-level BPE tokenizer trained here on a small
generated corpus, and a chat template. It answers nonsense, quickly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Llama-3-like, with explicit markers so the chat template stays readable.
# Tool definitions, an assistant turn's calls and tool results are rendered too (Hermes-style
# <tool_call> lines) so tests can see them in prompts; a plain conversation renders as before.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|system|>\n<tools>{{ tools | tojson }}</tools><|end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% for call in message['tool_calls'] or [] %}"
    "<tool_call>{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}"
    "</tool_call>"
    "{% endfor %}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

_WORDS = (
    "the a an answer question draft proposal response model is are was of to in and or "
    "not with for on by this that it be can will should what why how when where which "
    "number sum add plus minus times equals result first second third final best good "
    "bad true false one two three four five six seven eight nine ten zero hello world "
    "please explain write short story poem code python list value error fix"
).split()


def _corpus(lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 16))]
        digits = " ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(0, 3)))
        out.append(" ".join(words).capitalize() + ". " + digits)
    return out


def build_tiny_model(path: str | Path, *, vocab_size: int = 512, hidden_size: int = 128,
                     layers: int = 2, seed: int = 0) -> Path:
    """Write a loadable random Llama checkpoint with tokenizer and chat template to `path`.

    Idempotent: an existing complete checkpoint at `path` is reused as it is.
    head_dim is 64 (2 heads of 64) because vLLM's CPU attention refuses small ones.
    """
    path = Path(path)
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    # Imported here: building is rare, and these imports are heavy.
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(3000, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>",  # type: ignore[no-untyped-call]
                                   eos_token="<|eos|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)

    end_of_turn = fast.convert_tokens_to_ids("<|end|>")
    assert isinstance(end_of_turn, int)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=hidden_size // 64,
        num_key_value_heads=hidden_size // 64, max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id, eos_token_id=[fast.eos_token_id, end_of_turn],
        pad_token_id=fast.pad_token_id, tie_word_embeddings=True, dtype="float32",
    )
    LlamaForCausalLM(config).save_pretrained(path)  # type: ignore[no-untyped-call]
    (path / "generation_config.json").write_text(json.dumps({
        "bos_token_id": fast.bos_token_id, "eos_token_id": config.eos_token_id}))
    return path


if __name__ == "__main__":
    import sys

    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "models/tiny"))
