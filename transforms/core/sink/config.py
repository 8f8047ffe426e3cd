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
        sigv4: {region: us-east-1, service: aps, role_arn: "arn:aws:iam::123456789012:role/w", profile: p}
        tenant_header: forward     # forward (X-Scope-OrgID = the message's tenant) | drop
        tenant: team-a             # or send this tenant instead
        tenant_label: team         # or each series' own tenant, named by this label (else tenant / the message's)
        tenant_label_drop: true    # and remove that label before sending
        queue_config: {max_samples_per_send: 2000, max_bytes_per_send: 4194304, shards: 4,
                       batch_send_deadline: 1s, min_backoff: 30ms, max_backoff: 5s}
        write_relabel_configs:
          - {action: drop, source_labels: [__name__], regex: "go_.*"}
          - {action: labeldrop, regex: "instance"}
        subscription: projects/P/subscriptions/S   # default: <input subscription>-<name>
        healthcheck: {enabled: true, url: http://127.0.0.1:8428/health}
        order: strict              # the store refuses older samples (Prometheus, Mimir): see docs/sinks.md; default any
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from transforms.core.protocol import HEADER_TENANT, RESERVED_REQUEST_HEADERS, Protocol, is_valid_tenant
from transforms.core.sink.auth import SIGV4_DEFAULT_SERVICE, Auth, BasicAuth, BearerAuth, NoAuth, SigV4Auth
from transforms.core.sink.relabel import Rule, RuleError, parse_rule

TENANT_MODES = ("forward", "drop")
# any: the store takes samples in any order (VictoriaMetrics, or an out_of_order_time_window), nothing is kept;
# strict: it refuses a sample older than the newest it holds, so what it accepted is remembered (order.py)
ORDER_MODES = ("any", "strict")
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_NAME = re.compile(r"[A-Za-z0-9_.~+%-]{1,100}\Z")  # usable as a Pub/Sub subscription-name suffix
_AWS_WORD = re.compile(r"[a-z0-9-]{1,64}\Z")  # AWS region and service names
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+\Z")
SIGV4_KEYS = ("region", "service", "role_arn", "profile")


class SinkConfigError(ValueError):
    """A sink setting that cannot work; the message names the sink and the setting."""


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    """Batching and retries (the sinks file's `queue_config`); the one place these defaults are stated."""

    max_samples_per_request: int = 2000
    max_bytes_per_request: int = 4 << 20  # uncompressed protobuf bytes
    shards: int = 4
    flush_seconds: float = 1.0
    min_backoff: float = 0.03
    max_backoff: float = 5.0
    # None: retry transient failures forever (data waits in Pub/Sub); else seconds a sink may keep failing before
    # each request gets one try and is dead-lettered (until the sink answers again)
    max_retry_duration: float | None = None


@dataclasses.dataclass(frozen=True)
class Healthcheck:
    enabled: bool = False
    url: str | None = None  # None: the sink's own URL


@dataclasses.dataclass(frozen=True)
class SinkConfig:
    url: str
    name: str
    protocol: Protocol = Protocol.V1
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    auth: Auth = NoAuth()
    tenant_header: str = "forward"
    tenant: str | None = None
    tenant_label: str | None = None  # route each series to the tenant this label names
    tenant_label_drop: bool = False
    queue: QueueConfig = QueueConfig()
    rules: tuple[Rule, ...] = ()
    subscription: str | None = None
    healthcheck: Healthcheck = Healthcheck()
    order: str = "any"

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


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise SinkConfigError(f"{what}: expected true or false, got {value!r}")
    return value


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
        if name.lower() == "authorization" and not isinstance(sink.auth, NoAuth):
            raise SinkConfigError(f"{where}: an Authorization header conflicts with basic_auth / bearer_token_file"
                                  " / sigv4")
    if sink.tenant_header not in TENANT_MODES:
        raise SinkConfigError(f"{where}: tenant_header must be one of {', '.join(TENANT_MODES)}")
    if sink.tenant is not None and not is_valid_tenant(sink.tenant):
        raise SinkConfigError(f"{where}: tenant {sink.tenant!r} is not a valid tenant id")
    if sink.tenant_label is not None:
        if not _LABEL_NAME.match(sink.tenant_label) or sink.tenant_label.startswith("__"):
            raise SinkConfigError(f"{where}: tenant_label {sink.tenant_label!r} is not a label name "
                                  "([a-zA-Z_][a-zA-Z0-9_]*, not a reserved __ name)")
        if sink.tenant_header != "forward":
            raise SinkConfigError(f"{where}: tenant_label sends {HEADER_TENANT}; it cannot go with tenant_header: drop")
    elif sink.tenant_label_drop:
        raise SinkConfigError(f"{where}: tenant_label_drop needs tenant_label")
    if sink.order not in ORDER_MODES:
        raise SinkConfigError(f"{where}: order must be any (the store accepts samples in any order: VictoriaMetrics, "
                              "or one with out_of_order_time_window) or strict (it refuses samples older than the "
                              f"newest it holds: Prometheus, Mimir by default), got {sink.order!r}")
    queue = sink.queue
    if min(queue.max_samples_per_request, queue.max_bytes_per_request, queue.shards) < 1:
        raise SinkConfigError(f"{where}: max_samples_per_send, max_bytes_per_send and shards must be >= 1")
    if not 0 < queue.min_backoff <= queue.max_backoff:
        raise SinkConfigError(f"{where}: need 0 < min_backoff <= max_backoff")
    return sink


def from_flags(urls: Sequence[str], *, protocol: str = "1.0", timeout: float | None = None,
               headers: Sequence[str] = (), bearer_token_file: str | None = None,
               basic_auth_username: str | None = None, basic_auth_password_file: str | None = None,
               sigv4_region: str | None = None, sigv4_service: str | None = None, sigv4_role_arn: str | None = None,
               sigv4_profile: str | None = None,
               tenant_header: str | None = None, tenant: str | None = None, tenant_label: str | None = None,
               tenant_label_drop: bool = False,
               max_samples_per_request: int | None = None, max_bytes_per_request: int | None = None,
               shards: int | None = None, healthcheck_url: str | None = None, order: str | None = None
               ) -> list[SinkConfig]:
    """One sink per URL (a value may hold several, comma-separated), all with the same settings.

    The flags become sinks-file entries and go through the sinks file's parser; None means the default.
    """
    try:
        Protocol(protocol)
    except ValueError as exc:
        raise SinkConfigError(f"protocol must be 1.0 or 2.0, got {protocol!r}") from exc
    queue = {"max_samples_per_send": max_samples_per_request, "max_bytes_per_send": max_bytes_per_request,
             "shards": shards}
    common: dict[str, Any] = {
        "protocol": protocol, "remote_timeout": timeout, "headers": dict(parse_header(h) for h in headers),
        "bearer_token_file": bearer_token_file, "tenant_header": tenant_header, "tenant": tenant,
        "tenant_label": tenant_label, "tenant_label_drop": tenant_label_drop or None,
        "queue_config": {k: v for k, v in queue.items() if v is not None},
        "basic_auth": {"username": basic_auth_username, "password_file": basic_auth_password_file}
        if basic_auth_username else None,
        "sigv4": _flag_sigv4(sigv4_region, sigv4_service, sigv4_role_arn, sigv4_profile),
        "healthcheck": {"enabled": True, "url": healthcheck_url} if healthcheck_url else None, "order": order,
    }
    common = {k: v for k, v in common.items() if v is not None}
    every = [u.strip() for value in urls for u in value.split(",") if u.strip()]
    return _unique([_sink_from_mapping({"url": url, **common}, f"--remote_write_url {url}") for url in every])


def _flag_sigv4(region: str | None, service: str | None, role_arn: str | None,
                profile: str | None) -> dict[str, str] | None:
    """The --remote_write_sigv4_* flags as a sinks-file `sigv4:` block; the region is what turns SigV4 on."""
    values = {"region": region, "service": service, "role_arn": role_arn, "profile": profile}
    if not region:
        if any(values.values()):
            raise SinkConfigError("--remote_write_sigv4_service/_role_arn/_profile need --remote_write_sigv4_region")
        return None
    return {k: v for k, v in values.items() if v}


def _unique(sinks: list[SinkConfig]) -> list[SinkConfig]:
    names = [s.name for s in sinks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SinkConfigError(f"sink names must be unique (they name subscriptions): {', '.join(duplicated)}")
    return sinks


def _sink_from_mapping(entry: Mapping[str, Any], where: str) -> SinkConfig:
    if not isinstance(entry, Mapping) or not entry.get("url"):
        raise SinkConfigError(f"{where}: each sink needs a url")
    known = {"url", "name", "protocol", "remote_timeout", "headers", "basic_auth", "bearer_token_file", "sigv4",
             "tenant_header", "tenant", "tenant_label", "tenant_label_drop", "queue_config", "write_relabel_configs",
             "subscription", "healthcheck", "order"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise SinkConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    queue = entry.get("queue_config") or {}
    queue_known = {"max_samples_per_send", "max_bytes_per_send", "shards", "batch_send_deadline", "min_backoff",
                   "max_backoff", "max_retry_duration"}
    if set(queue) - queue_known:
        raise SinkConfigError(f"{where}.queue_config: unknown setting(s) {', '.join(sorted(set(queue) - queue_known))}")
    health = entry.get("healthcheck") or {}
    try:
        protocol = Protocol(str(entry.get("protocol", Protocol.V1.value)))
        rules = tuple(parse_rule(r, f"{where}.write_relabel_configs[{i}]")
                      for i, r in enumerate(entry.get("write_relabel_configs") or []))
    except ValueError as exc:
        raise SinkConfigError(f"{where}: {exc}") from exc
    retry_limit = queue.get("max_retry_duration")
    return _check(SinkConfig(
        url=str(entry["url"]), name=str(entry.get("name") or default_name(str(entry["url"]))), protocol=protocol,
        timeout=parse_duration(entry.get("remote_timeout", SinkConfig.timeout), f"{where}.remote_timeout"),
        headers=tuple((str(k), str(v)) for k, v in (entry.get("headers") or {}).items()),
        auth=parse_auth(entry, where),
        tenant_header=str(entry.get("tenant_header", SinkConfig.tenant_header)), tenant=entry.get("tenant"),
        tenant_label=None if entry.get("tenant_label") is None else str(entry["tenant_label"]),
        tenant_label_drop=_flag(entry.get("tenant_label_drop", False), f"{where}.tenant_label_drop"),
        queue=QueueConfig(
            max_samples_per_request=int(queue.get("max_samples_per_send", QueueConfig.max_samples_per_request)),
            max_bytes_per_request=int(queue.get("max_bytes_per_send", QueueConfig.max_bytes_per_request)),
            shards=int(queue.get("shards", QueueConfig.shards)),
            flush_seconds=parse_duration(queue.get("batch_send_deadline", QueueConfig.flush_seconds),
                                         f"{where}.batch_send_deadline"),
            min_backoff=parse_duration(queue.get("min_backoff", QueueConfig.min_backoff), f"{where}.min_backoff"),
            max_backoff=parse_duration(queue.get("max_backoff", QueueConfig.max_backoff), f"{where}.max_backoff"),
            max_retry_duration=None if retry_limit is None else parse_duration(retry_limit,
                                                                               f"{where}.max_retry_duration")),
        rules=rules, subscription=entry.get("subscription"),
        healthcheck=Healthcheck(enabled=bool(health.get("enabled", bool(health))), url=health.get("url")),
        order=str(entry.get("order", SinkConfig.order))))


def parse_auth(entry: Mapping[str, Any], where: str) -> Auth:
    """The one auth of a sink entry; a new kind adds its branch here (and its class in transforms/core/sink/auth.py)."""
    basic = entry.get("basic_auth") or {}
    bearer_file = entry.get("bearer_token_file")
    sigv4 = entry.get("sigv4")
    if sum(bool(x) for x in (bearer_file, basic.get("username"), sigv4 is not None)) > 1:
        raise SinkConfigError(f"{where}: use one of basic_auth, bearer_token_file and sigv4, not both")
    if sigv4 is not None:
        return parse_sigv4(sigv4, f"{where}.sigv4")
    if basic.get("password") and basic.get("password_file"):
        raise SinkConfigError(f"{where}: use basic_auth password or password_file, not both")
    if bearer_file:
        return BearerAuth(token_file=str(bearer_file))
    if basic.get("username"):
        return BasicAuth(username=str(basic["username"]), password=basic.get("password"),
                         password_file=basic.get("password_file"))
    return NoAuth()


def parse_sigv4(block: Any, where: str) -> SigV4Auth:
    """Prometheus' `sigv4:` block, minus static keys: credentials come from the standard AWS chain."""
    if not isinstance(block, Mapping):
        raise SinkConfigError(f"{where}: expected a mapping with region, service, role_arn, profile")
    if {"access_key", "secret_key"} & set(block):
        raise SinkConfigError(f"{where}: access_key/secret_key are not read from the sinks file; use the standard "
                              "AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role)")
    unknown = sorted(set(block) - set(SIGV4_KEYS))
    if unknown:
        raise SinkConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    region, service = block.get("region"), block.get("service") or SIGV4_DEFAULT_SERVICE
    if not region:
        raise SinkConfigError(f"{where}: region is required (e.g. us-east-1)")
    for name, value in (("region", region), ("service", service)):
        if not _AWS_WORD.match(str(value)):
            raise SinkConfigError(f"{where}: {name} {value!r} is not an AWS {name} name such as "
                                  f"{'us-east-1' if name == 'region' else 'aps'}")
    role_arn = block.get("role_arn")
    if role_arn and not _ROLE_ARN.match(str(role_arn)):
        raise SinkConfigError(f"{where}: role_arn {role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    profile = block.get("profile")
    return SigV4Auth(region=str(region), service=str(service), role_arn=str(role_arn) if role_arn else None,
                     profile=str(profile) if profile else None)


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
        return _unique([_sink_from_mapping(entry, f"remote_write[{i}]") for i, entry in enumerate(entries)])
    except RuleError as exc:
        raise SinkConfigError(str(exc)) from exc


def all_sinks(flag_sinks: Iterable[SinkConfig], file_sinks: Iterable[SinkConfig]) -> list[SinkConfig]:
    return _unique([*flag_sinks, *file_sinks])
