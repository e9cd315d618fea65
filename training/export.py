"""`aft export`: turn a trained model into a checkpoint `aft serve --model DIR` loads as it is.

    aft export runs/aft/final models/my-aft --proposals 5 --rounds 2

The directory holds full weights (a LoRA adapter is merged into its base: vLLM then
serves it like any model, with no adapter machinery), the tokenizer with the chat
template it was trained with, a generation config that stops at the template's
end-of-turn token, and aft.json (serving/manifest.py): the aggregation format version and
layout (the one its rows were built with, as their summary records it), recommended serving
settings, base model and a summary of the training data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.early_exit import parse_share
from serving.format import FORMAT_VERSION, AggregationFormat
from serving.manifest import Manifest, parse_manifest, write_manifest
from training.config import TRAIN_RECORD
from training.rows import data_summary as summarize_data

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)



def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special token the chat template closes an assistant turn with (Llama 3: <|eot_id|>), if any.

    A base model's generation config often stops only at its end-of-text token; a model
    fine-tuned on a chat template learns to end its answer with the template's own marker,
    and vLLM keeps generating past it unless the generation config names it.
    """
    marker = "\x07aft-marker\x07"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # templates may refuse a conversation shape; then there is nothing to learn here
        return []
    assert isinstance(text, str)
    after = text[text.rindex(marker) + len(marker):]
    special = set(tokenizer.all_special_ids) | {
        i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return [i for i in tokenizer.encode(after, add_special_tokens=False) if i in special][:1]


def _stop_at_end_of_turn(generation: GenerationConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    eos = generation.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    for i in [*end_of_turn_ids(tokenizer), tokenizer.eos_token_id]:
        if i is not None and i not in ids:
            ids.append(i)
    generation.eos_token_id = ids


def _load_model(model_dir: Path, base_model: str | None) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    adapter = model_dir / "adapter_config.json"
    if not adapter.is_file():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    from peft import PeftModel

    base = base_model or json.loads(adapter.read_text())["base_model_name_or_path"]
    logger.info("merging the LoRA adapter %s into %s", model_dir, base)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), model_dir)
    return merged.merge_and_unload()  # type: ignore[no-any-return]


def export(model_dir: str | Path, out_dir: str | Path, *, base_model: str | None = None,
           data_summary: dict[str, Any] | None = None, recommended: dict[str, Any] | None = None,
           aggregation_format: AggregationFormat | None = None) -> Path:
    """Write a servable checkpoint of `model_dir` (full weights or a LoRA adapter) to `out_dir`; returns it.

    base_model and data_summary default to what training recorded (aft_train.json: the
    base model, and a summary of its data file when that file is still there).
    recommended: `aft` serving options (proposals, rounds, proposal_temperature,
    proposal_top_p, temperature, top_p, early_exit); None or {} leaves the service's defaults.
    aggregation_format defaults to the one the data summary records (`aft data --format`), else paper.
    """
    from transformers import AutoTokenizer

    model_dir, out = Path(model_dir), Path(out_dir)
    record_path = model_dir / TRAIN_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    base_model = base_model or record.get("model")
    if data_summary is None:
        data = record.get("data")
        data_summary = summarize_data(data) if data and Path(data).is_file() else {}
    # Checked the way the service reads it (ManifestError, a ValueError), before any weight is written.
    layout = aggregation_format or data_summary.get("format") or AggregationFormat.PAPER
    checked = parse_manifest({"format_version": FORMAT_VERSION, "format": layout, "recommended": recommended or {}})

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.chat_template:
        raise ValueError(f"{model_dir}: the tokenizer has no chat template; the service could not render prompts")
    model = _load_model(model_dir, base_model)
    _stop_at_end_of_turn(model.generation_config, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_manifest(out, Manifest(format=checked.format, recommended=checked.recommended, base_model=base_model,
                                 data=data_summary))
    return out


def make_parser(prog: str = "aft export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Write a checkpoint `aft serve` loads as it is "
                                                            "(LoRA merged, tokenizer, chat template, aft.json).")
    parser.add_argument("model_dir", help="Trained model: OUTPUT_DIR/final of `aft train` (full or LoRA adapter).")
    parser.add_argument("out_dir", help="Where to write the servable checkpoint.")
    parser.add_argument("--base-model", help="Base of a LoRA adapter (default: what training recorded).")
    parser.add_argument("--data", help="Training JSONL to summarize in aft.json (default: the one training used).")
    parser.add_argument("--format", type=AggregationFormat, choices=list(AggregationFormat),
                        help="The aggregation prompts' layout the model was trained on (default: what the "
                             "data's summary records, else paper).")
    recommended = parser.add_argument_group("recommended serving settings (written to aft.json; default: none)")
    for name in ("proposals", "rounds"):
        recommended.add_argument(f"--{name}", type=int)
    for name in ("proposal_temperature", "proposal_top_p", "temperature", "top_p"):
        recommended.add_argument("--" + name.replace("_", "-"), dest=name, type=float)
    recommended.add_argument("--early-exit", type=_share, help="Stop when this share of a round's drafts agree: "
                             "all, or a number in (0, 1] (aft.early_exit); for a model measured no worse with it.")
    return parser


def _share(text: str) -> float:
    try:
        return parse_share(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None, *, prog: str = "aft export") -> int:
    args = make_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = ("proposals", "rounds", "proposal_temperature", "proposal_top_p", "temperature", "top_p", "early_exit")
    recommended = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    try:
        summary = summarize_data(args.data) if args.data else None
        out = export(args.model_dir, args.out_dir, base_model=args.base_model, data_summary=summary,
                     recommended=recommended, aggregation_format=args.format)
    except (ValueError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(f"exported: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m training.export"))
