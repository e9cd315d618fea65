"""Early exit: a round whose drafts agree is the answer, with no further round and no final aggregation.

Drafts agree when their texts are identical after whitespace normalisation (stripped, every run of
whitespace one space). A round agrees when at least ceil(share * N) of its N drafts, and never fewer
than two, are one text: a single draft agrees with nothing. Only drafts that ended on their own
(finish_reason "stop") count: a draft cut by max_tokens is not an answer, and an empty one says nothing.
With a JSON response format, drafts agree when they parse to the same value (key order and spacing do
not matter), and only drafts the answer could be count: JSON, and valid under the format's schema. Free
drafts (aft.constrained_drafts false) may be prose; those agree with nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

from jsonschema import validators

from serving.backends.base import Completion, ResponseFormat

AGREEING_FINISH = "stop"
"""The finish_reason of an agreed draft, and so of the answer it becomes."""

_SHARE_DIGITS = 9
"""`share * N` is rounded to this many decimals before its ceiling: 0.7 * 10 is 7.000000000000001 in
floats, and seven drafts are 0.7 of ten."""


def parse_share(text: str) -> float:
    """A threshold as a command line writes it: "all" (1.0) or a share of the drafts in (0, 1].
    ValueError for anything else."""
    value = 1.0 if text.strip() == "all" else float(text)
    if not 0 < value <= 1:  # NaN fails this too
        raise ValueError(f'expected "all" or a share of the drafts in (0, 1], got {text!r}')
    return value


def normalise(text: str) -> str:
    """`text` stripped, with every run of whitespace as one space: what two drafts compare by."""
    return " ".join(text.split())


def _frozen(value: object) -> Hashable:
    # Objects compare as sets of members; booleans are tagged, since True == 1 in Python but not in JSON.
    if isinstance(value, dict):
        return frozenset((key, _frozen(member)) for key, member in value.items())
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, bool):
        return (bool, value)
    assert isinstance(value, Hashable)
    return value


def json_key(text: str, schema: dict[str, object] | None = None) -> Hashable | None:
    """What a JSON draft compares by: its parsed value; None when it is not JSON, or not valid under `schema`."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if schema is not None and not validators.validator_for(schema)(schema).is_valid(value):
        return None
    return _frozen(value)


def needed(share: float, drafts: int) -> int:
    """How many of `drafts` drafts must agree at `share` (0 < share <= 1)."""
    return max(2, math.ceil(round(share * drafts, _SHARE_DIGITS)))


def agreed_draft(completions: Sequence[Completion], share: float, *,
                 answer_format: ResponseFormat | None = None) -> int | None:
    """The first draft that at least `share` of `completions` agree with, or None when too few agree.
    With the answer's JSON `answer_format`, drafts compare as parsed values, and only those it allows count."""
    if len(completions) < 2:
        return None
    compare: Callable[[str], Hashable | None] = normalise
    if answer_format is not None:
        compare = lambda text: json_key(text, answer_format.schema)  # noqa: E731
    keys = [compare(c.text) if c.finish_reason == AGREEING_FINISH and c.text.strip() else None for c in completions]
    counts = Counter(key for key in keys if key is not None)
    need = needed(share, len(completions))
    # With a share of one half or less two texts may both reach it: the first draft's wins.
    return next((i for i, key in enumerate(keys) if key is not None and counts[key] >= need), None)
