"""A checkpoint's `aft.json`: which aggregation format it was trained on and how to serve it.

    {"format_version": 1, "format": "paper",
     "recommended": {"proposals": 5, "rounds": 2, "proposal_temperature": 0.7,
                     "proposal_top_p": 0.95, "temperature": 0.7, "top_p": 1.0},
     "base_model": "meta-llama/Llama-3.1-8B", "data": {...}, "created": "2025-01-01T00:00:00+00:00"}

`training/export.py` writes it; `aft serve --model DIR` reads it for its defaults. `format` is
the aggregation prompt's layout the checkpoint was trained on (serving/format.py: "paper", the
default when absent, or "conversation-first"). A manifest whose format version or format this
service does not know is refused: serving such a checkpoint with our prompts would silently feed
it bytes it was never trained on.
Every `recommended` field is optional; a missing one leaves the service's default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.format import FORMAT_VERSION, AggregationFormat

MANIFEST_NAME = "aft.json"
KNOWN_FORMAT_VERSIONS = frozenset({FORMAT_VERSION})
"""Aggregation format versions this code can serve (serving/format.py)."""


class ManifestError(ValueError):
    """aft.json is malformed (not JSON, a field of the wrong type, an unknown recommendation)."""


class UnknownFormatVersion(ManifestError):
    """aft.json names an aggregation format version (or format) this service does not implement."""


@dataclass(frozen=True)
class Recommended:
    """How the checkpoint serves best; each field is an `aft` request option, None: no advice."""

    proposals: int | None = None
    rounds: int | None = None
    proposal_temperature: float | None = None
    proposal_top_p: float | None = None
    temperature: float | None = None
    top_p: float | None = None
    early_exit: float | None = None
    """aft.early_exit: stop when this share of a round's drafts agree (1.0: all)."""

    def as_dict(self) -> dict[str, int | float]:
        """The recommendations that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Manifest:
    """The contents of aft.json."""

    format_version: int = FORMAT_VERSION
    format: AggregationFormat = AggregationFormat.PAPER
    """The aggregation prompts' layout the checkpoint was trained on."""
    recommended: Recommended = field(default_factory=Recommended)
    base_model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """What the checkpoint was trained on (example counts, builder, source); informational."""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        """aft.json's text; recommendations that are not set are left out."""
        return json.dumps({**asdict(self), "recommended": self.recommended.as_dict()}, indent=2,
                          ensure_ascii=False) + "\n"


def _number(name: str, value: object, kind: type) -> int | float:
    # bool is an int in Python; `"proposals": true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ManifestError(f"recommended.{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return value


def parse_manifest(data: object) -> Manifest:
    """Validate aft.json's decoded contents; raises ManifestError / UnknownFormatVersion."""
    if not isinstance(data, dict):
        raise ManifestError("aft.json must hold a JSON object")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ManifestError(f"aft.json needs an integer format_version, got {version!r}")
    if version not in KNOWN_FORMAT_VERSIONS:
        raise UnknownFormatVersion(
            f"aft.json declares aggregation format version {version}; this service knows "
            f"{sorted(KNOWN_FORMAT_VERSIONS)}. The checkpoint was trained on prompts this version cannot "
            f"produce: upgrade the service (or re-export the checkpoint for format {FORMAT_VERSION}).")
    layout = data.get("format", AggregationFormat.PAPER.value)
    if not isinstance(layout, str) or layout not in set(AggregationFormat):
        raise UnknownFormatVersion(
            f"aft.json declares aggregation format {layout!r}; this service knows "
            f"{[f.value for f in AggregationFormat]}. Serving it with other prompts than it was trained on "
            f"would silently degrade it: upgrade the service.")
    raw = data.get("recommended")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ManifestError("aft.json: recommended must be an object")
    kinds = {f.name: int if f.name in ("proposals", "rounds") else float for f in fields(Recommended)}
    unknown = sorted(set(raw) - set(kinds))
    if unknown:  # a recommendation we would not apply must not pass unnoticed
        raise ManifestError(f"aft.json: unknown recommended field(s) {unknown}; known: {sorted(kinds)}")
    values: dict[str, Any] = {k: None if v is None else _number(k, v, kinds[k]) for k, v in raw.items()}
    recommended = Recommended(**values)
    base_model, summary, created = data.get("base_model"), data.get("data"), data.get("created", "")
    summary = {} if summary is None else summary
    if base_model is not None and not isinstance(base_model, str):
        raise ManifestError("aft.json: base_model must be a string")
    if not isinstance(summary, dict):
        raise ManifestError("aft.json: data must be an object")
    return Manifest(version, AggregationFormat(layout), recommended, base_model, summary, str(created))


def read_manifest(directory: str | Path) -> Manifest | None:
    """The manifest of a checkpoint directory, or None when it has no aft.json."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write `manifest` as DIR/aft.json; returns its path."""
    path = Path(directory) / MANIFEST_NAME
    path.write_text(manifest.to_json(), encoding="utf-8")
    return path
