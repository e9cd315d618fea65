"""Drafts as reasoning: every round's drafts as one text, each headed by its round and number, in the
order a stream sends them (round 0 first, its drafts by number). Streamed and non-streamed answers
build it from the same heading, so the two carry the same text."""

from __future__ import annotations

from serving.pipeline import Layer

FIELDS = ("reasoning", "reasoning_content")
"""The delta's and message's fields that carry it: vLLM's name, and the older one (DeepSeek's)
that many chat front ends read; the same text goes in both."""


def heading(round_: int, draft: int) -> str:
    """What comes before draft `draft` (from 0) of round `round_`; a blank line parts it from the last."""
    first = round_ == 0 and draft == 0
    return ("" if first else "\n\n") + f"### Round {round_} · draft {draft + 1}\n"


def reasoning_text(layers: list[Layer]) -> str | None:
    """The whole reasoning of an answer made from `layers`; None when it had no drafts."""
    text = "".join(heading(layer.round, number) + draft
                   for layer in layers for number, draft in enumerate(layer.drafts))
    return text or None
