"""The server's settings, and the YAML file that names the models it serves.

```yaml
api_keys: [os.environ/VLMKIT_API_KEY]   # optional; without keys every route is open
keys:                                   # keys with names, limits and models (see server/keys.py)
  - {key: os.environ/TEAM_KEY, name: team, rpm: 60, tpm: 200000, models: [gpt-4o]}
  - {key: os.environ/OPS_KEY, name: ops, admin: true}
usage: {database: postgresql://gw@db/vlmkit}   # usage per key (server/usage.py); default: a SQLite file
models:
  gpt-4o:                               # a gateway name: one or more deployments
    - model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
    - model: openai/gpt-4o
      api_base: https://my-azure-proxy.example/v1
      api_key: os.environ/BACKUP_KEY
  qwen-vl:                              # a fleet of replicas (see server/fleet.py)
    routing: affinity                   # affinity | least_work (the default) | round_robin
    health_check: 5                     # seconds between GET /health of each replica ({interval, path})
    max_outstanding_tokens: 200000      # estimated prompt tokens that saturate a replica (affinity spills)
    load_bound: 2                       # affinity spills past twice the mean requests in flight
    deployments:
      - {model: hosted_vllm/Qwen/Qwen2.5-VL-7B-Instruct, api_base: "http://10.0.0.11:8000/v1", name: vllm-a}
      - {model: hosted_vllm/Qwen/Qwen2.5-VL-7B-Instruct, api_base: "http://10.0.0.12:8000/v1", name: vllm-b}
  vision-local:                         # a local model: a GGUF (and its mmproj) for the engine
    path: /models/smolvlm.gguf
    mmproj: /models/mmproj-smolvlm.gguf
    gpu: auto                           # auto (the GPU when llama.cpp has one), off, or a number of layers
limits:
  max_body_mb: 32
  max_queue: 16
fetch:                                  # how image URLs in requests are fetched
  allow_hosts: [127.0.0.1, 10.0.0.0/8]  # private hosts that may be fetched (names, addresses, networks)
  max_mb: 20
  timeout: 10                           # seconds, for the whole fetch
  max_redirects: 5
```

A value ``os.environ/NAME`` (LiteLLM's spelling) or ``${NAME}`` is read from the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.errors import ConfigError as ConfigError  # re-exported: the config is where it is raised
from vlmkit.errors import VlmkitError
from vlmkit.images import DEFAULT_MAX_PIXELS
from vlmkit.images.fetch import FetchOptions, FetchRemedies
from vlmkit.server.keys import KeyPolicy, parse_keys, plain_keys

if TYPE_CHECKING:
    from vlmkit.engine.gpu import GpuSetting

FETCH_REMEDIES = FetchRemedies(
    allow_hosts="list the host under `fetch: allow_hosts:` in the server's YAML config (host names, "
    "addresses and CIDR networks) and restart the server",
    max_bytes="raise `fetch: max_mb` in the server's YAML config",
    timeout="raise `fetch: timeout` (seconds) in the server's YAML config",
    max_redirects="raise `fetch: max_redirects` in the server's YAML config",
)
"""What the server's fetch refusals tell its users to change: its config, not Python's FetchOptions."""


@dataclass(frozen=True)
class Deployment:
    """One place a gateway name is served from: a provider model with its address and key."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    max_retries: int | None = 0
    """Retries inside the provider layer; the gateway fails over to the next deployment instead."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Provider options passed through (``api_version``, ``aws_region_name``, ...)."""
    name: str | None = None
    """What logs and metrics call it (``name:`` in the config); ``None``: ``model@api_base``."""

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        return f"{self.model}@{self.api_base}" if self.api_base else self.model


@dataclass(frozen=True)
class GatewayModel:
    name: str
    deployments: tuple[Deployment, ...]
    vision: bool | None = None
    """Declared vision support; ``None``: ask the providers' capability table."""
    routing: str = "least_work"
    """How a request picks its deployment: ``affinity``, ``least_work`` or ``round_robin`` (:mod:`.fleet`)."""
    health_interval: float | None = None
    """Seconds between active health checks of each deployment with an ``api_base`` (``None``: none)."""
    health_path: str = "/health"
    """Checked with a GET on the deployment's origin (``http://host:port/health``); 2xx is healthy."""
    max_outstanding_tokens: int | None = None
    """Estimated prompt tokens in flight that saturate one deployment: affinity spills past it."""
    load_bound: float = 2.0
    """Under affinity, a replica holding a key takes at most this many times the fleet's mean requests
    in flight (rounded up) before the key spills to the least-loaded replica (bounded-load hashing)."""


@dataclass(frozen=True)
class LocalModel:
    """A GGUF (and mmproj) served by the embedded engine under ``name``."""

    name: str
    path: str
    mmproj: str | None = None
    gpu: GpuSetting | None = None
    """Where it runs (``LoadOptions.gpu``); ``None``: the server's ``gpu``."""
    threads: int | None = None
    """CPU threads for it (``LoadOptions.cpu_threads``); ``None``: the cores this process may use."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: frozenset[str] = frozenset()
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images_per_request: int = 16
    max_queue: int = 16
    """Requests that may wait for one local model before the next is answered 429."""
    max_large_requests: int = 4
    """Requests with bodies over 256 KB (images) worked on at once; more wait, their bodies received."""
    max_body_memory_bytes: int = 16 * 1024 * 1024
    """Bytes of large bodies (over 256 KB) held in memory at once, arriving or worked on; more wait unread."""
    body_timeout: float = 120.0
    """Seconds a request may take to send its whole body (408 after)."""
    min_body_rate: float = 8 * 1024
    """Bytes a second a body must keep up once ``body_rate_grace`` has passed (408 below; 0: no minimum)."""
    body_rate_grace: float = 10.0
    """Seconds a body has before ``min_body_rate`` applies to it (for a slow start)."""
    files_max_bytes: int = 512 * 1024 * 1024
    """Total bytes of uploaded images kept in memory."""
    files_dir: str | None = None
    """Where uploads are also written, so they survive a restart (None: in memory only)."""
    models_dir: str | None = None
    model_ttl: float | None = 3600.0
    gpu: GpuSetting = "auto"
    """Where local models run unless their entry says (``vlmkit serve --gpu``; see ``LoadOptions.gpu``)."""
    fetch: FetchOptions = field(default_factory=lambda: FetchOptions(remedies=FETCH_REMEDIES))
    gateway: Mapping[str, GatewayModel] = field(default_factory=dict)
    local: Mapping[str, LocalModel] = field(default_factory=dict)
    failover_cooldown: float = 5.0
    """Seconds a deployment that failed is passed over while its siblings are healthy."""
    shutdown_grace: float = 10.0
    """Seconds a graceful shutdown waits for in-flight requests before cancelling them."""
    keys: tuple[KeyPolicy, ...] = ()
    """Keys with names, limits and allowed models (:mod:`vlmkit.server.keys`); ``api_keys`` have none."""
    usage_database: str | None = None
    """Where usage per key is kept: a SQLite file, or ``postgresql://...`` (:mod:`vlmkit.server.usage`).
    ``None``: ``$VLMKIT_HOME/usage.db`` when ``keys`` are configured, else usage is not recorded."""

    def key_policies(self) -> tuple[KeyPolicy, ...]:
        """Every key the server accepts: ``api_keys`` (no limits) and ``keys``."""
        return plain_keys(self.api_keys) + self.keys

    lmstudio_discovery: bool = False
    """Also listen on LM Studio's first discovery port (41343), so LM Studio's SDKs find the server
    with no host given (``vlmkit serve --lmstudio-discovery``)."""

    def with_overrides(self, **changes: Any) -> ServerSettings:
        """A copy with every change that is not ``None``."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def env_value(value: Any, where: str) -> Any:
    """``os.environ/NAME`` or ``${NAME}`` read from the environment; anything else as it is."""
    if not isinstance(value, str):
        return value
    name = value[len("os.environ/") :] if value.startswith("os.environ/") else None
    match = _ENV.match(value)
    if match:
        name = match.group(1)
    if name is None:
        return value
    if name not in os.environ:
        raise ConfigError(f"{where} reads the environment variable {name}, which is not set")
    return os.environ[name]


def load_config(path: str | Path, base: ServerSettings | None = None) -> ServerSettings:
    """Settings from a YAML file, on top of ``base``."""
    import yaml

    p = Path(path).expanduser()
    try:
        raw = yaml.safe_load(p.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config file {p} is not valid YAML: {exc}") from None
    return parse_config(raw or {}, base, where=str(p))


def parse_config(raw: Any, base: ServerSettings | None = None, *, where: str = "config") -> ServerSettings:
    settings = base or ServerSettings()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping (api_keys, models, limits, fetch)")
    unknown = set(raw) - {
        "api_keys",
        "keys",
        "usage",
        "models",
        "limits",
        "fetch",
        "models_dir",
        "files_dir",
        "lmstudio_discovery",
    }
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(sorted(map(str, unknown)))}")
    changes: dict[str, Any] = {}
    if "api_keys" in raw:
        keys = raw["api_keys"]
        if isinstance(keys, str) or not isinstance(keys, list):
            raise ConfigError(f"{where}: api_keys must be a list of strings")
        changes["api_keys"] = frozenset(str(env_value(k, f"{where}: api_keys")) for k in keys)
    if raw.get("keys") is not None:
        changes["keys"] = parse_keys(raw["keys"], where, env_value)
    usage = raw.get("usage")
    if usage is not None:
        if not isinstance(usage, Mapping) or set(usage) - {"database"}:
            raise ConfigError(
                f"{where}: usage must be a mapping with `database:` (a SQLite file path, or postgresql://user@host/db)"
            )
        if usage.get("database") is not None:
            changes["usage_database"] = str(env_value(usage["database"], f"{where}: usage.database"))
    for key in ("models_dir", "files_dir"):
        if raw.get(key) is not None:
            changes[key] = str(raw[key])
    if raw.get("lmstudio_discovery") is not None:
        if not isinstance(raw["lmstudio_discovery"], bool):
            raise ConfigError(f"{where}: lmstudio_discovery must be true or false")
        changes["lmstudio_discovery"] = raw["lmstudio_discovery"]
    gateway: dict[str, GatewayModel] = {}
    local: dict[str, LocalModel] = {}
    models = raw.get("models") or {}
    if not isinstance(models, Mapping):
        raise ConfigError(f"{where}: models must map names to deployments")
    for name, spec in models.items():
        here = f"{where}: models.{name}"
        if isinstance(spec, Mapping) and "path" in spec:
            gpu = _gpu(spec["gpu"], f"{here}.gpu") if spec.get("gpu") is not None else None
            threads = spec.get("threads")
            if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
                raise ConfigError(
                    f"{here}.threads must be a whole number of CPU threads, at least 1 (got {threads!r}); "
                    "leave it out to use every core this process may use"
                )
            local[str(name)] = LocalModel(str(name), str(spec["path"]), _opt_str(spec.get("mmproj")), gpu, threads)
        else:
            gateway[str(name)] = _gateway_model(str(name), spec, here)
    changes["gateway"] = gateway
    changes["local"] = local
    limits = raw.get("limits") or {}
    if not isinstance(limits, Mapping):
        raise ConfigError(f"{where}: limits must be a mapping")
    for key, value in limits.items():
        if key == "max_body_mb":
            changes["max_body_bytes"] = int(float(value) * 1024 * 1024)
        elif key == "files_max_mb":
            changes["files_max_bytes"] = int(float(value) * 1024 * 1024)
        elif key == "max_body_memory_mb":
            changes["max_body_memory_bytes"] = int(float(value) * 1024 * 1024)
        elif key in ("max_queue", "max_pixels", "max_images_per_request", "max_large_requests"):
            changes[key] = int(value)
        elif key in ("failover_cooldown", "shutdown_grace", "body_timeout", "body_rate_grace"):
            changes[key] = float(value)
        elif key == "min_body_rate_kb":
            changes["min_body_rate"] = float(value) * 1024
        elif key == "model_ttl":
            changes[key] = None if value is None else float(value)
        else:
            raise ConfigError(f"{where}: unknown limit {key!r}")
    fetch = raw.get("fetch")
    if fetch is not None:
        if not isinstance(fetch, Mapping):
            raise ConfigError(f"{where}: fetch must be a mapping (allow_hosts, max_mb, timeout, max_redirects)")
        unknown = set(fetch) - {"allow_hosts", "max_mb", "timeout", "max_redirects"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown fetch setting(s) {', '.join(sorted(map(str, unknown)))}; "
                "known: allow_hosts, max_mb, timeout, max_redirects"
            )
        hosts = fetch.get("allow_hosts") or []
        if not isinstance(hosts, list):
            raise ConfigError(f"{where}: fetch.allow_hosts must be a list, e.g. [127.0.0.1, printer.lan, 10.0.0.0/8]")
        changes["fetch"] = FetchOptions(
            allow_hosts=frozenset(str(h) for h in hosts),
            max_bytes=int(float(fetch.get("max_mb", 20)) * 1024 * 1024),
            timeout=float(fetch.get("timeout", 10.0)),
            max_redirects=int(fetch.get("max_redirects", 5)),
            remedies=FETCH_REMEDIES,
        )
    return replace(settings, **changes)


def _gateway_model(name: str, spec: Any, where: str) -> GatewayModel:
    vision: bool | None = None
    fleet: dict[str, Any] = {}
    if isinstance(spec, Mapping) and "deployments" in spec:
        unknown = set(spec) - {"deployments", "vision", *_FLEET_KEYS}
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}; "
                f"known: deployments, vision, {', '.join(_FLEET_KEYS)}"
            )
        vision = spec.get("vision")
        fleet = _fleet(spec, where)
        spec = spec["deployments"]
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise ConfigError(f"{where}: no deployments")
    deployments = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("model"), str) or "/" not in item["model"]:
            raise ConfigError(f"{here}: a deployment needs 'model: provider/name'")
        if item.get("vision") is not None:
            vision = bool(item["vision"])
        known = {"model", "api_base", "base_url", "api_key", "timeout", "max_retries", "vision", "name"}
        options = {k: env_value(v, f"{here}.{k}") for k, v in item.items() if k not in known}
        deployments.append(
            Deployment(
                model=item["model"],
                api_base=_opt_str(env_value(item.get("api_base") or item.get("base_url"), f"{here}.api_base")),
                api_key=_opt_str(env_value(item.get("api_key"), f"{here}.api_key")),
                timeout=float(item["timeout"]) if item.get("timeout") is not None else None,
                max_retries=int(item.get("max_retries", 0)),
                options=options,
                name=_opt_str(item.get("name")),
            )
        )
    return GatewayModel(name, tuple(deployments), vision, **fleet)


_FLEET_KEYS = ("routing", "health_check", "max_outstanding_tokens", "load_bound")
ROUTING_MODES = ("affinity", "least_work", "round_robin")


def _fleet(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A model's fleet settings: ``routing``, ``health_check`` (seconds, or ``{interval, path}``), saturation."""
    out: dict[str, Any] = {}
    routing = spec.get("routing")
    if routing is not None:
        if routing not in ROUTING_MODES:
            raise ConfigError(
                f"{where}.routing: {routing!r} is not a routing mode; use one of {', '.join(ROUTING_MODES)}"
            )
        out["routing"] = routing
    check = spec.get("health_check")
    if isinstance(check, Mapping):
        if check.get("path") is not None:
            out["health_path"] = str(check["path"])
        check = check.get("interval", 5.0)
    if check is not None and check is not False:
        try:
            out["health_interval"] = float(check)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}.health_check: {check!r} is not a number of seconds; write e.g. `health_check: 5` "
                "or `health_check: {interval: 5, path: /health}`"
            ) from None
    if spec.get("max_outstanding_tokens") is not None:
        out["max_outstanding_tokens"] = int(spec["max_outstanding_tokens"])
    bound = spec.get("load_bound")
    if bound is not None:
        try:
            out["load_bound"] = float(bound)
        except (TypeError, ValueError):
            out["load_bound"] = 0.0
        if not out["load_bound"] >= 1.0:
            raise ConfigError(
                f"{where}.load_bound: {bound!r} is not a factor of at least 1; write e.g. `load_bound: 2` "
                "(a replica takes up to twice the mean requests in flight before its keys spill)"
            )
    return out


def _gpu(value: Any, where: str) -> GpuSetting:
    from vlmkit.engine.gpu import parse_gpu

    try:
        return parse_gpu(value, "gpu")
    except VlmkitError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
