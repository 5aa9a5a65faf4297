"""Prometheus metrics in the text exposition format (version 0.0.4), written without a client library.

Counters and histograms live in one ``Metrics`` object on ``app.state``; gauges that reflect
the present (Z position, busy job) are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["CONTENT_TYPE", "Histogram", "Metrics", "format_labels"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REQUEST_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: Sequence[tuple[str, str]]) -> str:
    """``{a="x",b="y"}`` with the format's escaping, or an empty string without labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass
class Histogram:
    """Cumulative-bucket histogram of one label set."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for i, upper in enumerate(self.buckets):
            if value <= upper:
                self.counts[i] += 1
        self.total += value
        self.count += 1


LabelKey = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe store of the service's counters and histograms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, dict[LabelKey, Histogram]] = {}
        self._gauges: dict[str, dict[LabelKey, float]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._declare("autofocus_runs_total", "counter", "Autofocus runs finished, by routine and outcome")
        self._declare("autofocus_duration_seconds", "histogram", "Wall time of autofocus runs")
        self._declare("autofocus_frames_total", "counter", "Frames snapped by autofocus runs")
        self._declare(
            "autofocus_residual_estimate_um",
            "gauge",
            "Defocus the model still estimated at the end of the last autofocus run (um)",
        )
        self._declare("autofocus_errors_total", "counter", "Error responses and failed jobs, by problem type")
        self._declare("autofocus_predictions_total", "counter", "Frames run through the defocus model by the API")
        self._declare("autofocus_jobs_total", "counter", "Jobs finished, by kind and status")
        self._declare("http_requests_total", "counter", "HTTP requests, by method, route and status")
        self._declare("http_request_duration_seconds", "histogram", "HTTP request handling time by route")

    def _declare(self, name: str, kind: str, help_text: str) -> None:
        self._help[name] = (kind, help_text)
        if kind == "counter":
            self._counters[name] = {}
        elif kind == "histogram":
            self._histograms[name] = {}
        else:
            self._gauges[name] = {}

    # -- recording -----------------------------------------------------------------------------
    def inc(self, name: str, labels: Iterable[tuple[str, str]] = (), amount: float = 1.0) -> None:
        key = tuple(labels)
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(
        self, name: str, value: float, labels: Iterable[tuple[str, str]] = (), buckets: tuple[float, ...] = ()
    ) -> None:
        key = tuple(labels)
        with self._lock:
            series = self._histograms[name]
            if key not in series:
                series[key] = Histogram(buckets or DURATION_BUCKETS_S)
            series[key].observe(value)

    def set_gauge(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        with self._lock:
            self._gauges[name][tuple(labels)] = float(value)

    def count_error(self, problem_type: str) -> None:
        self.inc("autofocus_errors_total", [("type", problem_type)])

    def record_autofocus(
        self, routine: str, outcome: str, duration_s: float | None, frames: int | None, residual_um: float | None
    ) -> None:
        """Count one finished autofocus run (any outcome)."""
        self.inc("autofocus_runs_total", [("routine", routine), ("outcome", outcome)])
        if duration_s is not None:
            self.observe("autofocus_duration_seconds", duration_s, [("routine", routine)])
        if frames:
            self.inc("autofocus_frames_total", [("routine", routine)], frames)
        if residual_um is not None:
            self.set_gauge("autofocus_residual_estimate_um", residual_um)

    def record_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        self.inc("http_requests_total", [("method", method), ("route", route), ("status", str(status))])
        self.observe("http_request_duration_seconds", duration_s, [("route", route)], REQUEST_BUCKETS_S)

    # -- exposition ------------------------------------------------------------------------------
    def render(self, live_gauges: Sequence[tuple[str, str, Sequence[tuple[LabelKey, float]]]] = ()) -> str:
        """The text format; ``live_gauges`` are ``(name, help, [(labels, value)])`` read at scrape time."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in self._help.items():
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "counter":
                    for key, value in sorted(self._counters[name].items()):
                        lines.append(f"{name}{format_labels(key)} {_number(value)}")
                elif kind == "gauge":
                    for key, value in sorted(self._gauges[name].items()):
                        lines.append(f"{name}{format_labels(key)} {_number(value)}")
                else:
                    for key, hist in sorted(self._histograms[name].items()):
                        for upper, count in zip(hist.buckets, hist.counts, strict=True):
                            labels = (*key, ("le", _number(upper)))
                            lines.append(f"{name}_bucket{format_labels(labels)} {count}")
                        lines.append(f"{name}_bucket{format_labels((*key, ('le', '+Inf')))} {hist.count}")
                        lines.append(f"{name}_sum{format_labels(key)} {_number(hist.total)}")
                        lines.append(f"{name}_count{format_labels(key)} {hist.count}")
        for name, help_text, samples in live_gauges:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            for key, value in samples:
                lines.append(f"{name}{format_labels(key)} {_number(value)}")
        return "\n".join(lines) + "\n"
