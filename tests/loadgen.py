"""A bounded load generator for end-to-end tests: threads, a new connection per request, stdlib only.

    targets = [Target("show.test", "/", expect=lambda body: body.startswith(b"showcase"))]
    with Load(port, targets, clients=20) as load:
        ...deploy...
    assert load.result.failures == [], load.result.summary()

`duration` bounds the run: with it, leaving the block waits until the time is up; without it, the
load runs until the block is left. Every request uses `Connection: close` (keepalive connections see
spurious read errors across nginx reloads, which are not what a deploy test measures).
"""

from __future__ import annotations

import http.client
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

Predicate = Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    path: str = "/"
    status_below: int = 500
    expect: Predicate | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    at: float  # seconds since the load started
    host: str
    path: str
    status: int | None  # None: no HTTP response at all
    error: str
    latency: float
    body: bytes = b""

    def __str__(self) -> str:
        got = f"HTTP {self.status}" if self.status is not None else "no response"
        return (f"t={self.at:.3f}s http://{self.host}{self.path}: {got}: {self.error} "
                f"({self.latency * 1000:.0f} ms) {self.body[:120]!r}")


@dataclass(slots=True)
class Result:
    total: int = 0
    failures: list[Failure] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    per_target: dict[tuple[str, str], int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.total > 0

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def summary(self, show: int = 10) -> str:
        lines = [
            f"{self.total} requests in {self.elapsed:.1f} s, {len(self.failures)} failed; latency "
            f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, max {self.max_latency * 1000:.1f} ms",
        ]
        lines += [f"  {failure}" for failure in self.failures[:show]]
        if len(self.failures) > show:
            lines.append(f"  ... and {len(self.failures) - show} more")
        return "\n".join(lines)


def _as_target(item: Target | tuple) -> Target:  # type: ignore[type-arg]
    return item if isinstance(item, Target) else Target(*item)


class Load:
    """`clients` threads sending GETs round-robin over `targets` to 127.0.0.1:port."""

    def __init__(
        self,
        port: int,
        targets: Sequence[Target | tuple],  # type: ignore[type-arg]
        *,
        clients: int = 20,
        duration: float | None = None,
        timeout: float = 10.0,
        address: str = "127.0.0.1",
    ) -> None:
        if not targets:
            raise ValueError("Load needs at least one target")
        self.port = port
        self.targets = [_as_target(target) for target in targets]
        self.clients = clients
        self.duration = duration
        self.timeout = timeout
        self.address = address
        self.result = Result()
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # On an exception, stop at once rather than finishing a bounded run.
        self.stop(wait_for_duration=exc_type is None)

    def start(self) -> None:
        self._started = time.monotonic()
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, wait_for_duration: bool = True) -> Result:
        if self.duration is None or not wait_for_duration:
            self._stop.set()
        for thread in self._threads:
            thread.join()
        self._stop.set()
        self.result.elapsed = time.monotonic() - self._started
        return self.result

    def run(self) -> Result:
        """A bounded run in the foreground (needs `duration`)."""
        if self.duration is None:
            raise ValueError("Load.run() needs a duration")
        self.start()
        return self.stop()

    def _client(self) -> None:
        while not self._stop.is_set():
            elapsed = time.monotonic() - self._started
            if self.duration is not None and elapsed >= self.duration:
                return
            with self._lock:
                target = self.targets[next(self._next) % len(self.targets)]
            self._record(target, *self._request(target))

    def _request(self, target: Target) -> tuple[int | None, bytes, str, float, float]:
        began = time.monotonic()
        connection = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        try:
            connection.request("GET", target.path, headers={"Host": target.host, "Connection": "close"})
            reply = connection.getresponse()
            body = reply.read()
            status: int | None = reply.status
            error = ""
        except (OSError, http.client.HTTPException) as exc:
            status, body, error = None, b"", f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
        return status, body, error, began, time.monotonic() - began

    def _record(self, target: Target, status: int | None, body: bytes, error: str, began: float,
                latency: float) -> None:
        if not error and status is not None and status >= target.status_below:
            error = f"status {status} >= {target.status_below}"
        if not error and target.expect is not None:
            try:
                if not target.expect(body):
                    error = "unexpected body"
            except Exception as exc:
                error = f"body predicate raised {type(exc).__name__}: {exc}"
        with self._lock:
            self.result.total += 1
            self.result.latencies.append(latency)
            key = (target.host, target.path)
            self.result.per_target[key] = self.result.per_target.get(key, 0) + 1
            if error:
                self.result.failures.append(
                    Failure(began - self._started, target.host, target.path, status, error, latency, body)
                )
