"""Prometheus metrics of the service, in a registry of the app's own (one per create_app)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from serving.backends.base import Usage
from serving.backends.upstream_client import RetryKind
from serving.errors import (
    AFTError,
    BackendError,
    EngineDead,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)

CONTENT_TYPE = CONTENT_TYPE_LATEST
PIPELINE_PATHS = frozenset({"/v1/chat/completions", "/v1/responses"})
"""The routes that run the pipeline (Chat Completions and Responses): their requests are counted."""


# Engine and upstream errors by kind, most specific first: the first class in an error's MRO decides.
_ERROR_KINDS: dict[type[BackendError], str] = {
    EngineDead: "engine_dead", UpstreamRateLimited: "upstream_rate_limited", UpstreamTimeout: "upstream_timeout",
    UpstreamUnavailable: "upstream_unavailable", BackendError: "backend_error"}


def error_kind(error: AFTError) -> str:
    """A short name of an error's kind: aft_backend_errors_total's label, the access line's `error`."""
    kind = next((_ERROR_KINDS[c] for c in type(error).__mro__ if c in _ERROR_KINDS), None)
    return kind or error.code or re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


class _Retries(Collector):
    """aft_upstream_retries_total, read from the backend's own counts at each scrape."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("aft_upstream_retries", "Upstream calls sent again, by why: the "
                                     "connection dropped before the answer (disconnected), connecting failed "
                                     "(connect), the upstream answered 502/503 (status).", labels=["kind"])
        counts = self.counts()
        for kind in get_args(RetryKind):
            family.add_metric([kind], counts.get(kind, 0))
        yield family


def stage_of(round_: int, rounds: int) -> str:
    """Name of a pipeline round for metric labels: proposals, aggregation (intermediate) or final."""
    if round_ == rounds:
        return "final"
    return "proposals" if round_ == 0 else "aggregation"


class Metrics:
    """The service's metrics. Record calls are cheap; exposition renders on scrape."""

    def __init__(self, retries: Callable[[], Mapping[str, int]] = dict, in_flight: Callable[[], float] = int) -> None:
        """`retries`: the backend's retry counts by kind (an OpenAI backend's `retried`; none by default).
        `in_flight`: the chat requests being served (the lifecycle's admitted count), read at each scrape."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("aft_requests", "Chat completion requests answered, by outcome (stream is 'unknown' "
                                "for requests refused before the route had their body: 400, 401, 408, 413, 415).",
                                ["stream", "status"], registry=r)
        self.in_flight = Gauge("aft_requests_in_flight", "Chat completion requests being served.", registry=r)
        self.in_flight.set_function(in_flight)
        self.latency = Histogram("aft_request_duration_seconds", "Time from request to last byte.",
                                 ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("aft_time_to_first_token_seconds",
                              "Streaming: time from request to the first answer token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("aft_tokens", "Tokens spent, by pipeline stage and kind.",
                              ["stage", "kind"], registry=r)
        self.backend_requests = Counter("aft_backend_requests", "Engine/upstream requests, by pipeline stage.",
                                        ["stage"], registry=r)
        self.drafts_capped = Counter("aft_drafts_capped", "Answers whose drafts the context budget capped "
                                     "below the max_tokens they asked for.", registry=r)
        self.drafts_trimmed = Counter("aft_drafts_trimmed", "Drafts cut so that an aggregation prompt fits "
                                      "the context.", registry=r)
        self.early_exits = Counter("aft_early_exits", "Answers whose drafts agreed (aft.early_exit), by the "
                                   "round they agreed at: no later round and no final aggregation ran.",
                                   ["round"], registry=r)
        self.stage_duration = Histogram("aft_stage_duration_seconds", "Time of each pipeline round: the "
                                        "proposals, each intermediate aggregation, the final answer.",
                                        ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.backend_errors = Counter("aft_backend_errors", "Requests ended by an engine or upstream error, by "
                                      "kind.", ["kind"], registry=r)
        for kind in _ERROR_KINDS.values():
            self.backend_errors.labels(kind)
        r.register(_Retries(retries))
        # Children of the labels every answer records, looked up once, not per answer.
        self._by_stage = {stage: (self.tokens.labels(stage, "prompt"), self.tokens.labels(stage, "completion"),
                                  self.backend_requests.labels(stage), self.stage_duration.labels(stage))
                          for stage in ("proposals", "aggregation", "final")}
        self._latency = {stream: self.latency.labels(stream) for stream in ("true", "false")}

    def refused(self, path: str, status: int, stream: str = "unknown") -> None:
        """Count a chat or Responses request refused before the pipeline ran (other paths are not counted)."""
        if path in PIPELINE_PATHS:
            self.requests.labels(stream, str(status)).inc()

    def answered(self, stream: str, status: str, seconds: float) -> None:
        """Count a chat request the pipeline ran for, by outcome, and its duration."""
        self.requests.labels(stream, status).inc()
        self._latency[stream].observe(seconds)

    def record_answer(self, usage_by_round: list[Usage], seconds_by_round: list[float], rounds: int,
                      early_exit_round: int | None = None) -> None:
        """Count an answer's tokens, engine requests and round durations by stage, and its early exit."""
        if early_exit_round is not None:
            self.early_exits.labels(str(early_exit_round)).inc()
        for round_, usage in enumerate(usage_by_round):
            prompt, completion, requests, _ = self._by_stage[stage_of(round_, rounds)]
            prompt.inc(usage.prompt_tokens)
            completion.inc(usage.completion_tokens)
            requests.inc(usage.requests)
        for round_, seconds in enumerate(seconds_by_round):
            self._by_stage[stage_of(round_, rounds)][3].observe(seconds)

    def record_error(self, error: AFTError) -> None:
        """Count a request that an engine or upstream error ended (other errors are not counted here)."""
        if isinstance(error, BackendError):
            self.backend_errors.labels(error_kind(error)).inc()

    def record_budget(self, capped_to: int | None, trimmed: int) -> None:
        """Count an answer whose drafts the context budget capped, and the drafts it cut."""
        if capped_to is not None:
            self.drafts_capped.inc()
        if trimmed:
            self.drafts_trimmed.inc(trimmed)

    def render(self) -> bytes:
        # The process-wide registry carries the process collectors (RSS, CPU, open fds) and,
        # with the in-process backend, vLLM's own engine metrics (vllm:*).
        return generate_latest(self.registry) + generate_latest(REGISTRY)
