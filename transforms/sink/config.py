"""Remote-write sink settings: from the simple flags (one or more URLs) or a sinks file.

The sinks file is YAML (JSON is YAML too) in the spirit of Prometheus' `remote_write:` block:

    remote_write:
      - url: http://127.0.0.1:8428/api/v1/write
        name: vm
        protocol: "1.0"            # or "2.0"
        remote_timeout: 30s
        headers: {X-Team: infra}
        basic_auth: {username: u, password_file: /secrets/pw}
        bearer_token_file: /secrets/token
        tenant_header: forward     # forward (X-Scope-OrgID = the message's tenant) | drop
        tenant: team-a             # or send this tenant instead
        queue_config: {max_samples_per_send: 2000, max_bytes_per_send: 4194304, shards: 4,
                       batch_send_deadline: 1s, min_backoff: 30ms, max_backoff: 5s}
        write_relabel_configs:
          - {action: drop, source_labels: [__name__], regex: "go_.*"}
          - {action: labeldrop, regex: "instance"}
        subscription: projects/P/subscriptions/S   # default: <input subscription>-<name>
        healthcheck: {enabled: true, url: http://127.0.0.1:8428/health}
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from transforms.protocol import HEADER_TENANT, RESERVED_REQUEST_HEADERS, Protocol, is_valid_tenant
from transforms.sink.relabel import Rule, RuleError, parse_rule

TENANT_MODES = ("forward", "drop")
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_NAME = re.compile(r"[A-Za-z0-9_.~+%-]{1,100}\Z")  # usable as a Pub/Sub subscription-name suffix


class SinkConfigError(ValueError):
    """A sink setting that cannot work; the message names the sink and the setting."""


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    url: str
    name: str
    protocol: Protocol = Protocol.V1
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    basic_auth_username: str | None = None
    basic_auth_password: str | None = None
    basic_auth_password_file: str | None = None
    bearer_token_file: str | None = None
    tenant_header: str = "forward"
    tenant: str | None = None
    max_samples_per_request: int = 2000
    max_bytes_per_request: int = 4 << 20  # uncompressed protobuf bytes
    shards: int = 4
    flush_seconds: float = 1.0
    min_backoff: float = 0.03
    max_backoff: float = 5.0
    max_retry_duration: float | None = None  # None: retry transient failures forever (data waits in Pub/Sub)
    rules: tuple[Rule, ...] = ()
    subscription: str | None = None
    healthcheck: bool = False
    healthcheck_url: str | None = None

    def subscription_for(self, input_subscription: str) -> str:
        """This sink's own Pub/Sub subscription: a broken sink then holds back nothing else."""
        return self.subscription or f"{input_subscription}-{self.name}"


def parse_duration(value: Any, what: str) -> float:
    """Seconds from a number or a Prometheus-style duration ('30s', '500ms', '5m')."""
    if isinstance(value, bool):
        raise SinkConfigError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise SinkConfigError(f"{what}: {value!r} is not a duration such as 30s, 500ms or 5m")
        seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    if seconds <= 0:
        raise SinkConfigError(f"{what}: must be positive, got {value!r}")
    return seconds


def default_name(url: str) -> str:
    """A stable sink name from its URL (so the derived subscription survives flag reordering)."""
    parts = urlsplit(url)
    raw = f"{parts.hostname or 'sink'}-{parts.port or ''}{parts.path}"
    return ("rw-" + re.sub(r"[^A-Za-z0-9]+", "-", raw).strip("-"))[:100]


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise SinkConfigError(f"header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def _check(sink: SinkConfig) -> SinkConfig:
    where = f"sink {sink.name!r}"
    parts = urlsplit(sink.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkConfigError(f"{where}: url {sink.url!r} must be http:// or https:// with a host")
    if not _NAME.match(sink.name):
        raise SinkConfigError(f"{where}: name must be 1-100 of [A-Za-z0-9_.~+%-]")
    for name, _ in sink.headers:
        if name.lower() in RESERVED_REQUEST_HEADERS:
            raise SinkConfigError(f"{where}: header {name!r} is reserved by the remote-write spec and cannot be set")
        if name.lower() == HEADER_TENANT.lower():
            raise SinkConfigError(f"{where}: set {HEADER_TENANT} with 'tenant' / 'tenant_header', not 'headers'")
        if name.lower() == "authorization" and (sink.bearer_token_file or sink.basic_auth_username):
            raise SinkConfigError(f"{where}: an Authorization header conflicts with basic_auth / bearer_token_file")
    if sink.tenant_header not in TENANT_MODES:
        raise SinkConfigError(f"{where}: tenant_header must be one of {', '.join(TENANT_MODES)}")
    if sink.tenant is not None and not is_valid_tenant(sink.tenant):
        raise SinkConfigError(f"{where}: tenant {sink.tenant!r} is not a valid tenant id")
    if sink.bearer_token_file and sink.basic_auth_username:
        raise SinkConfigError(f"{where}: use basic_auth or bearer_token_file, not both")
    if sink.basic_auth_password and sink.basic_auth_password_file:
        raise SinkConfigError(f"{where}: use basic_auth password or password_file, not both")
    if min(sink.max_samples_per_request, sink.max_bytes_per_request, sink.shards) < 1:
        raise SinkConfigError(f"{where}: max_samples_per_send, max_bytes_per_send and shards must be >= 1")
    if not 0 < sink.min_backoff <= sink.max_backoff:
        raise SinkConfigError(f"{where}: need 0 < min_backoff <= max_backoff")
    return sink


def from_flags(urls: Sequence[str], *, protocol: str = "1.0", timeout: float = 30.0, headers: Sequence[str] = (),
               bearer_token_file: str | None = None, basic_auth_username: str | None = None,
               basic_auth_password_file: str | None = None, tenant_header: str = "forward",
               tenant: str | None = None, max_samples_per_request: int = 2000,
               max_bytes_per_request: int = 4 << 20, shards: int = 4, healthcheck_url: str | None = None,
               ) -> list[SinkConfig]:
    """One sink per URL (a value may hold several, comma-separated), all with the same settings."""
    try:
        proto = Protocol(protocol)
    except ValueError as exc:
        raise SinkConfigError(f"protocol must be 1.0 or 2.0, got {protocol!r}") from exc
    every = [u.strip() for value in urls for u in value.split(",") if u.strip()]
    sinks = [_check(SinkConfig(
        url=url, name=default_name(url), protocol=proto, timeout=timeout,
        headers=tuple(parse_header(h) for h in headers), bearer_token_file=bearer_token_file,
        basic_auth_username=basic_auth_username, basic_auth_password_file=basic_auth_password_file,
        tenant_header=tenant_header, tenant=tenant, max_samples_per_request=max_samples_per_request,
        max_bytes_per_request=max_bytes_per_request, shards=shards,
        healthcheck=bool(healthcheck_url), healthcheck_url=healthcheck_url)) for url in every]
    return _unique(sinks)


def _unique(sinks: list[SinkConfig]) -> list[SinkConfig]:
    names = [s.name for s in sinks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SinkConfigError(f"sink names must be unique (they name subscriptions): {', '.join(duplicated)}")
    return sinks


def _sink_from_mapping(entry: Mapping[str, Any], index: int) -> SinkConfig:
    where = f"remote_write[{index}]"
    if not isinstance(entry, Mapping) or not entry.get("url"):
        raise SinkConfigError(f"{where}: each sink needs a url")
    known = {"url", "name", "protocol", "remote_timeout", "headers", "basic_auth", "bearer_token_file",
             "tenant_header", "tenant", "queue_config", "write_relabel_configs", "subscription", "healthcheck"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise SinkConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    queue = entry.get("queue_config") or {}
    queue_known = {"max_samples_per_send", "max_bytes_per_send", "shards", "batch_send_deadline", "min_backoff",
                   "max_backoff", "max_retry_duration"}
    if set(queue) - queue_known:
        raise SinkConfigError(f"{where}.queue_config: unknown setting(s) {', '.join(sorted(set(queue) - queue_known))}")
    auth = entry.get("basic_auth") or {}
    health = entry.get("healthcheck") or {}
    try:
        protocol = Protocol(str(entry.get("protocol", "1.0")))
        rules = tuple(parse_rule(r, f"{where}.write_relabel_configs[{i}]")
                      for i, r in enumerate(entry.get("write_relabel_configs") or []))
    except ValueError as exc:
        raise SinkConfigError(f"{where}: {exc}") from exc
    retry_limit = queue.get("max_retry_duration")
    return _check(SinkConfig(
        url=str(entry["url"]), name=str(entry.get("name") or default_name(str(entry["url"]))), protocol=protocol,
        timeout=parse_duration(entry.get("remote_timeout", 30), f"{where}.remote_timeout"),
        headers=tuple((str(k), str(v)) for k, v in (entry.get("headers") or {}).items()),
        basic_auth_username=auth.get("username"), basic_auth_password=auth.get("password"),
        basic_auth_password_file=auth.get("password_file"), bearer_token_file=entry.get("bearer_token_file"),
        tenant_header=str(entry.get("tenant_header", "forward")), tenant=entry.get("tenant"),
        max_samples_per_request=int(queue.get("max_samples_per_send", 2000)),
        max_bytes_per_request=int(queue.get("max_bytes_per_send", 4 << 20)), shards=int(queue.get("shards", 4)),
        flush_seconds=parse_duration(queue.get("batch_send_deadline", 1), f"{where}.batch_send_deadline"),
        min_backoff=parse_duration(queue.get("min_backoff", 0.03), f"{where}.min_backoff"),
        max_backoff=parse_duration(queue.get("max_backoff", 5), f"{where}.max_backoff"),
        max_retry_duration=None if retry_limit is None else parse_duration(retry_limit, f"{where}.max_retry_duration"),
        rules=rules, subscription=entry.get("subscription"),
        healthcheck=bool(health.get("enabled", bool(health))), healthcheck_url=health.get("url")))


def from_document(text: str) -> list[SinkConfig]:
    """Sinks from a YAML/JSON sinks file's text."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SinkConfigError(f"sinks file is not valid YAML/JSON: {exc}") from exc
    entries = document.get("remote_write") if isinstance(document, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise SinkConfigError("sinks file needs a non-empty 'remote_write:' list")
    try:
        return _unique([_sink_from_mapping(entry, i) for i, entry in enumerate(entries)])
    except RuleError as exc:
        raise SinkConfigError(str(exc)) from exc


def read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def all_sinks(flag_sinks: Iterable[SinkConfig], file_sinks: Iterable[SinkConfig]) -> list[SinkConfig]:
    return _unique([*flag_sinks, *file_sinks])
