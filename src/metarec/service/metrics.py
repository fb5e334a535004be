"""Prometheus metrics in the text exposition format (no client library needed).

Request counts and a latency histogram by route template and status,
adaptations (count and latency), events stored and duplicates, the size of
the adaptation cache and the model generation. Routes are labelled by their
template (``/v1/users/{user_id}/events``), never by the raw path, so the
number of series stays bounded.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{_fmt(b)}"}} {c}'
            for b, c in zip(BUCKETS, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.sum:.6f}")
        out.append(f"{name}_count{suffix} {self.total}")
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
        self._adapt = Histogram()
        self.events_stored = 0
        self.events_duplicate = 0
        self.reloads = 0

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            self._latency[(route, str(status))].observe(seconds)

    def observe_adaptation(self, seconds: float) -> None:
        with self._lock:
            self._adapt.observe(seconds)

    def count_events(self, accepted: int, duplicates: int) -> None:
        with self._lock:
            self.events_stored += accepted
            self.events_duplicate += duplicates

    def count_reload(self) -> None:
        with self._lock:
            self.reloads += 1

    def render(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> str:
        """The exposition text; ``gauges``: name → (help, current value)."""
        with self._lock:
            lines = _header(
                "metarec_http_requests_total", "counter", "HTTP requests by route, method, status"
            )
            for (route, method, status), n in sorted(self._requests.items()):
                labels = f'route="{_esc(route)}",method="{method}",status="{status}"'
                lines.append(f"metarec_http_requests_total{{{labels}}} {n}")
            name = "metarec_http_request_duration_seconds"
            lines += _header(name, "histogram", "HTTP request latency by route and status")
            for (route, status), hist in sorted(self._latency.items()):
                lines += hist.lines(name, f'route="{_esc(route)}",status="{status}"')
            name = "metarec_adaptation_duration_seconds"
            lines += _header(name, "histogram", "Time to adapt the model to one user's feedback")
            lines += self._adapt.lines(name, "")
            lines += _header("metarec_adaptations_total", "counter", "User adaptations computed")
            lines.append(f"metarec_adaptations_total {self._adapt.total}")
            for name, value, text in (
                ("metarec_events_stored_total", self.events_stored, "Feedback events stored"),
                ("metarec_events_duplicate_total", self.events_duplicate,
                 "Feedback events skipped as retries of a stored event_id"),
                ("metarec_model_reloads_total", self.reloads, "Model swaps since start"),
            ):  # fmt: skip
                lines += _header(name, "counter", text)
                lines.append(f"{name} {value}")
        for name, (text, get) in gauges.items():
            lines += _header(name, "gauge", text)
            lines.append(f"{name} {_fmt(float(get()))}")
        return "\n".join(lines) + "\n"


def _header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
