"""The retry policy for remote-write sinks: pure, so every branch is unit-tested without a network.

A sink forwarding samples to VictoriaMetrics, Prometheus, Mimir and the like asks `RetryPolicy.decide` what to
do after each attempt. The rules follow the remote-write 1.0/2.0 specs: 5xx, 408, 429 and connection errors are
transient and retried (honouring `Retry-After`); any other 4xx means the data can never be accepted as sent, so
it goes to the dead-letter store at once. Randomness and time are injected, and no HTTP library is imported:
`classify` recognises their exceptions by class name.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_INITIAL_DELAY = 0.030  # seconds; the spec's suggested minimum backoff
DEFAULT_MAX_DELAY = 5.0  # seconds; the spec's suggested maximum backoff
DEFAULT_MAX_RETRY_AFTER = 300.0  # seconds; a hostile or broken Retry-After must not stall a sink for longer
RETRYABLE_4XX = frozenset({408, 429})  # Request Timeout and Too Many Requests are transient
MAX_DOUBLINGS = 512  # 2.0 ** 512 is finite, so a huge attempt number cannot overflow the float arithmetic
MAX_DELTA_DIGITS = 15  # longer delta-seconds are capped without int() (which refuses over 4300 digits)
MIN_LAST_TRY = 0.05  # seconds left of max_elapsed below which a last try is not worth making
CHAIN_LIMIT = 8  # how many wrapped causes classify follows (requests wraps urllib3 wraps the socket error)

# Exception class names, matched along the MRO and the cause chain so no HTTP library is imported here.
_TIMEOUT_SUFFIXES = ("Timeout", "TimeoutError", "TimeoutException")  # builtin, requests, urllib3, httpx, aiohttp
_REFUSED = frozenset({"ConnectionRefusedError", "NewConnectionError", "NameResolutionError", "ConnectError",
                      "ClientConnectorError"})
_RESET = frozenset({"ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError", "RemoteDisconnected",
                    "IncompleteRead", "ProtocolError", "ChunkedEncodingError", "RemoteProtocolError",
                    "ServerDisconnectedError"})
_NETWORK = frozenset({"ConnectionError", "OSError", "MaxRetryError", "NetworkError", "ClientConnectionError"})
# Our own mistakes (bad URL, bad header, redirect loop): retrying can never help, even if they subclass OSError.
_NOT_TRANSIENT = frozenset({"ValueError", "TypeError", "InvalidURL", "URLRequired", "TooManyRedirects",
                            "UnsupportedProtocol"})


class Action(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"
    DROP_FINAL = "drop-final"  # the sink refused the data for good (4xx): dead-letter with its answer
    DROP_GAVE_UP = "drop-gave-up"  # still transient, but max_attempts/max_elapsed ran out: dead-letter


class ErrorKind(enum.Enum):
    REFUSED = "refused"  # no connection was made: refused, DNS failure, unreachable
    RESET = "reset"  # the connection broke mid-request
    TIMEOUT = "timeout"
    NETWORK = "network"  # some other connection-level failure
    OTHER = "other"  # not a connection error (bad URL, a bug): retrying cannot help


class Jitter(enum.Enum):
    FULL = "full"  # uniform in [0, d): spreads senders the most
    EQUAL = "equal"  # uniform in [d/2, d): keeps at least half the backoff


@dataclass(frozen=True)
class Outcome:
    """One attempt's result: either the sink's HTTP status (plus its Retry-After), or a connection error."""

    status: int | None = None
    error: ErrorKind | None = None
    retry_after: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if (self.status is None) == (self.error is None):
            raise ValueError("an Outcome has exactly one of status and error")


@dataclass(frozen=True)
class Attempt:
    """One POST to a sink, as the sink driver sees it: its outcome, the sink's answer (truncated), its latency."""

    outcome: Outcome
    answer: str
    seconds: float
    # What a 2.0 receiver said it wrote (protocol.parse_written): (samples, histograms, exemplars), or None.
    written: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_seconds: float = 0.0
    reason: str = ""

    @property
    def dead_letter(self) -> bool:
        return self.action in (Action.DROP_FINAL, Action.DROP_GAVE_UP)


def _error_kind(error: BaseException) -> ErrorKind | None:
    names = [cls.__name__ for cls in type(error).__mro__]
    if any(name in _NOT_TRANSIENT for name in names):
        return ErrorKind.OTHER
    for name in names:  # most specific class first: requests' ConnectTimeout is a timeout, not a NETWORK error
        if name.endswith(_TIMEOUT_SUFFIXES):
            return ErrorKind.TIMEOUT
        for kind, known in ((ErrorKind.REFUSED, _REFUSED), (ErrorKind.RESET, _RESET), (ErrorKind.NETWORK, _NETWORK)):
            if name in known:
                return kind
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (__cause__, __context__, urllib3's .reason), breadth first, without cycles."""
    seen: list[BaseException] = []
    todo: list[object] = [error]
    while todo and len(seen) < CHAIN_LIMIT:
        item = todo.pop(0)
        if isinstance(item, BaseException) and all(item is not s for s in seen):
            seen.append(item)
            todo += [item.__cause__, item.__context__, getattr(item, "reason", None)]
    return seen


def classify(status: int | None, error: BaseException | None, headers: Mapping[str, str] | None = None) -> Outcome:
    """Build an Outcome from what the HTTP client gave back; a status wins, since it means the sink answered.

    KeyboardInterrupt and other non-Exception errors are re-raised: they are the process's, not the sink's.
    """
    if status is not None:
        retry_after = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
        return Outcome(status=status, retry_after=retry_after)
    if error is None:
        raise ValueError("classify needs a status or an error")
    if not isinstance(error, Exception):
        raise error
    top = _error_kind(error)
    if top in (None, ErrorKind.OTHER):
        return Outcome(error=ErrorKind.OTHER, detail=f"{type(error).__name__}: {error}")
    chain = _chain(error)
    # The innermost cause says it shortest ("ConnectionRefusedError: [Errno 111] Connection refused"); requests'
    # and urllib3's wrappers repeat it inside a few hundred characters of pool and URL details.
    innermost = next((e for e in reversed(chain) if str(e)), error)
    detail = f"{type(innermost).__name__}: {innermost}"
    kinds = [_error_kind(e) for e in chain]  # refine requests' generic ConnectionError from its cause
    specific = [k for k in kinds if k in (ErrorKind.REFUSED, ErrorKind.RESET, ErrorKind.TIMEOUT)]
    return Outcome(error=specific[0] if specific else top, detail=detail)


def parse_retry_after(value: str | None, now: datetime, cap: float) -> float | None:
    """Seconds to wait per RFC 9110 (delta-seconds or HTTP-date), capped; None if absent or unparseable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return cap if len(value) > MAX_DELTA_DIGITS else min(float(int(value)), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    aware = [d if d.tzinfo else d.replace(tzinfo=UTC) for d in (when, now)]  # naive means UTC for both
    return min(max(0.0, (aware[0] - aware[1]).total_seconds()), cap)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, Retry-After, and by default no limit: a sink down for minutes loses nothing."""

    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    jitter: Jitter = Jitter.FULL
    max_attempts: int | None = None  # attempts in all, the first included; None = retry forever
    max_elapsed: float | None = None  # seconds since the first attempt; no retry may start after it
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)  # returns [0, 1)

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay <= self.max_delay or self.max_retry_after < 0:
            raise ValueError("need 0 < initial_delay <= max_delay and max_retry_after >= 0")
        if (self.max_attempts is not None and self.max_attempts < 1) or (self.max_elapsed or 0) < 0:
            raise ValueError("max_attempts must be >= 1 and max_elapsed >= 0")

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number `attempt` (1-based): initial * 2**(attempt-1), capped."""
        ceiling = min(self.max_delay, self.initial_delay * 2.0 ** min(attempt - 1, MAX_DOUBLINGS))
        if self.jitter is Jitter.EQUAL:
            return ceiling / 2 + self.random() * ceiling / 2
        return self.random() * ceiling

    def decide(self, attempt: int, outcome: Outcome, elapsed: float, now: datetime) -> Decision:
        """What to do after attempt number `attempt` (1-based), `elapsed` seconds after the first one started."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        status = outcome.status
        if status is not None and 200 <= status <= 299:
            return Decision(Action.SUCCESS, reason=f"HTTP {status}")
        if status is not None and not (500 <= status <= 599 or status in RETRYABLE_4XX):
            return Decision(Action.DROP_FINAL, reason=f"HTTP {status} is final: the sink will never accept it")
        if outcome.error is ErrorKind.OTHER:
            return Decision(Action.DROP_FINAL, reason=f"not a connection error: {outcome.detail}")
        what = f"HTTP {status}" if status is not None else f"connection {outcome.error.value} ({outcome.detail})"
        honoured = status == 429 or (status is not None and status >= 500)
        delay = parse_retry_after(outcome.retry_after, now, self.max_retry_after) if honoured else None
        source = "Retry-After" if delay is not None else "backoff"
        delay = self.backoff(attempt) if delay is None else delay
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return Decision(Action.DROP_GAVE_UP, reason=f"{what}; gave up after {attempt} attempts")
        if self.max_elapsed is not None and elapsed + delay > self.max_elapsed:
            remaining = self.max_elapsed - elapsed
            if source == "Retry-After" or remaining < MIN_LAST_TRY:
                return Decision(Action.DROP_GAVE_UP,
                                reason=f"{what}; gave up after {elapsed:.1f}s (max {self.max_elapsed:g}s)")
            # a backoff reaching past the limit is cut short: the last try is at the limit, not well before it
            delay, source = remaining, "the last try, at max_elapsed"
        return Decision(Action.RETRY, delay, f"{what}; retry in {delay:.3f}s ({source})")
