"""Stopping a training run once the model is good enough: greedy accuracy on a task's problems.

The toy recipe (training/toy.py) needs an SFT model that is good but imperfect; after a
fixed number of steps its accuracy depends on the seed, so SFT runs until the model reaches
a target instead, measured every few steps on problems of the training distribution.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from serving.format import proposer_messages
from training.tasks import Problem, Task, count_correct

logger = logging.getLogger(__name__)


def greedy_accuracy(model: Any, tokenizer: Any, task: Task, problems: Sequence[Problem], *, max_new_tokens: int,
                    batch_size: int = 128) -> float:
    """Share of `problems` a transformers model answers right, greedy, prompted as the service's
    proposers are (serving/format.py). The model and the tokenizer are left as they were found."""
    import torch

    texts = [tokenizer.apply_chat_template(proposer_messages(p.conversation), tokenize=False,
                                           add_generation_prompt=True) for p in problems]
    was_training, padding_side = model.training, tokenizer.padding_side
    tokenizer.padding_side = "left"  # every prompt ends where generation starts
    model.eval()
    answers: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                  add_special_tokens=False)
                out = model.generate(**batch.to(model.device), max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return count_correct(task, problems, answers) / len(problems)


def stop_at_accuracy(measure: Callable[[Any], float], *, target: float, every: int) -> Any:
    """A transformers TrainerCallback that measures the model (`measure(model)`, an accuracy) every
    `every` steps and stops the training once it reaches `target`; its `curve` keeps (step, accuracy).
    The trainer then ends as at its last step: `training.train.train` saves the model as it is."""
    from transformers import TrainerCallback

    class StopAtAccuracy(TrainerCallback):
        def __init__(self) -> None:
            self.curve: list[tuple[int, float]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step % every:
                return
            accuracy = measure(model)
            self.curve.append((state.global_step, accuracy))
            logger.info("step %d: accuracy %.3f (stops at %.2f)", state.global_step, accuracy, target)
            control.should_training_stop = accuracy >= target

    return StopAtAccuracy()
