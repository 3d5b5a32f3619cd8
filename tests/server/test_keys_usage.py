"""Keys with limits (429 with Retry-After, models a key may use) and usage per key in a real database:
SQLite surviving a restart, and PostgreSQL shared by two gateway processes."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import Running, Upstream, data_url, error_of, image_message, start_server
from tests.server.replicas import ROOT, free_port
from tests.server.served import wait_healthy
from vlmkit.server import Deployment, GatewayModel, ServerSettings
from vlmkit.server.config import ConfigError, parse_config
from vlmkit.server.keys import KeyPolicy

TEAM, TOKENS, ADMIN = "sk-team-0001", "sk-tokens-0002", "sk-admin-0003"


def keyed_settings(up: Upstream, database: str) -> ServerSettings:
    model = GatewayModel("gw", (Deployment("openai/up-model", api_base=up.base, api_key="k"),), vision=True)
    other = GatewayModel("other", (Deployment("openai/up-model", api_base=up.base, api_key="k"),), vision=True)
    return ServerSettings(
        gateway={"gw": model, "other": other},
        keys=(
            KeyPolicy("team", TEAM, rpm=2, models=frozenset({"gw"})),
            KeyPolicy("tokens", TOKENS, tpm=20),
            KeyPolicy("ops", ADMIN, admin=True),
        ),
        usage_database=database,
        shutdown_grace=1.0,
    )


def chat(server: Running, key: str, model: str = "gw", messages: Any = None) -> httpx.Response:
    body = {"model": model, "messages": messages or [{"role": "user", "content": "hi"}]}
    return httpx.post(server.base + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def usage(url: str, key: str = ADMIN) -> httpx.Response:
    return httpx.get(url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def rows(response: httpx.Response) -> dict[tuple[str, str], dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {(r["key"], r["model"]): r for r in response.json()["data"]}


@pytest.fixture()
def upstream(upstreams: Callable[[str], Upstream]) -> Upstream:
    return upstreams("up")


def test_a_key_over_its_request_limit_gets_429_with_retry_after(upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(keyed_settings(upstream, str(tmp_path / "usage.db")), record=False)
    try:
        assert chat(server, TEAM).status_code == 200
        assert chat(server, TEAM).status_code == 200
        r = chat(server, TEAM)
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        error = error_of(r)
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
        assert "the key 'team' is over its limit of 2 requests a minute" in error["message"]
        assert "Retry-After" in error["message"]
        assert len(upstream.requests) == 2  # the refused request never reached the upstream
        assert chat(server, TOKENS).status_code == 200  # another key has its own window
    finally:
        server.stop()


def test_a_key_over_its_token_limit_gets_429_once_its_answers_used_them(upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(keyed_settings(upstream, str(tmp_path / "usage.db")), record=False)
    try:
        assert chat(server, TOKENS).status_code == 200  # the fake upstream's answer uses 14 tokens
        assert chat(server, TOKENS).status_code == 200  # 14 < 20: admitted, and now 28 are used
        r = chat(server, TOKENS)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "over its limit of 20 tokens a minute" in error_of(r)["message"]
    finally:
        server.stop()


def test_a_key_may_use_only_its_models_and_only_an_admin_reads_usage(upstream: Upstream, tmp_path: Path) -> None:
    server = start_server(keyed_settings(upstream, str(tmp_path / "usage.db")), record=False)
    try:
        r = chat(server, TEAM, model="other")
        assert r.status_code == 403
        error = error_of(r)
        assert (error["code"], error["param"]) == ("model_not_allowed", "model")
        assert "the key 'team' may not use the model 'other'; it may use: gw" in error["message"]
        assert chat(server, "sk-nobody").status_code == 401
        r = usage(server.url, TEAM)
        assert r.status_code == 403
        assert error_of(r)["code"] == "admin_key_required"
        assert "needs an admin key; the key 'team' is not one" in error_of(r)["message"]
    finally:
        server.stop()


def test_usage_is_kept_in_sqlite_across_a_restart(upstream: Upstream, tmp_path: Path, hopper_jpeg: bytes) -> None:
    settings = keyed_settings(upstream, str(tmp_path / "usage.db"))
    server = start_server(settings, record=False)
    try:
        assert chat(server, TEAM, messages=image_message(data_url(hopper_jpeg))).status_code == 200
        assert chat(server, TOKENS).status_code == 200
        before = rows(usage(server.url))
    finally:
        server.stop()
    assert before[("team", "gw")] == {
        "key": "team",
        "model": "gw",
        "requests": 1,
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "total_tokens": 14,
        "images": 1,
        "image_bytes": len(hopper_jpeg),
    }
    server = start_server(settings, record=False)
    try:
        assert chat(server, TOKENS).status_code == 200
        after = rows(usage(server.url))
        assert after[("team", "gw")] == before[("team", "gw")]
        assert after[("tokens", "gw")]["requests"] == 2
        only = rows(httpx.get(server.url + "/v1/usage?key=team", headers={"Authorization": f"Bearer {ADMIN}"}))
        assert set(only) == {("team", "gw")}
    finally:
        server.stop()


def test_key_config_errors_say_what_to_write() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"key": "k", "rpm": "fast"}]})
    assert "keys[0].rpm: 'fast' is not a positive whole number" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"name": "a"}]})
    assert "keys[0]: each key needs `key:`" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"key": "k", "burst": 3}]})
    assert "unknown setting(s) burst" in str(info.value) and "rpm" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"key": "a", "name": "x"}, {"key": "b", "name": "x"}]})
    assert "the name(s) x are used twice" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"key": "k", "models": "gw"}]})
    assert "keys[0].models: must be a list of model names" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"usage": "usage.db"})
    assert "usage must be a mapping with `database:`" in str(info.value)
    settings = parse_config(
        {"keys": [{"key": "k", "name": "a", "rpm": 5, "models": ["gw"]}], "usage": {"database": "/tmp/u.db"}}
    )
    assert settings.keys == (KeyPolicy("a", "k", rpm=5, models=frozenset({"gw"})),)
    assert settings.usage_database == "/tmp/u.db"


def test_an_unreachable_usage_database_is_named_without_its_password() -> None:
    from vlmkit.server.usage import UsageStore, UsageStoreError

    port = free_port()  # nothing listens there
    with pytest.raises(UsageStoreError) as info:
        UsageStore(f"postgresql://gw:s3cret@127.0.0.1:{port}/usage")
    text = str(info.value)
    assert f"cannot open the usage database postgresql://gw:***@127.0.0.1:{port}/usage" in text
    assert "s3cret" not in text


# --- PostgreSQL, a real server from Debian's package -----------------------------------------------


@dataclass
class Postgres:
    url: str
    ctl: list[str]
    """pg_ctl with its data directory, run as the postgres user."""

    def restart(self) -> None:
        subprocess.run([*self.ctl, "-m", "fast", "-w", "restart"], check=True, capture_output=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on a free port of 127.0.0.1 in a temporary directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip(
            "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin/initdb is missing), so "
            "usage shared over PostgreSQL is NOT tested here: apt-get install postgresql (as .ci/run does)"
        )
    bin_dir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="vlmkit-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as Debian's postgres user
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", options]
    subprocess.run([*ctl, "-w", "start"], check=True, capture_output=True)
    try:
        yield Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", ctl)
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _serve(tmp_path: Path, name: str, config: str) -> tuple[subprocess.Popen[bytes], str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(config)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(tmp_path / name)}
    env.pop("VLMKIT_API_KEY", None)
    cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--port", str(port), "--config", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, timeout=30)
    return proc, url


def test_two_gateway_processes_share_usage_over_postgresql(
    postgres: Postgres, upstream: Upstream, tmp_path: Path, hopper_jpeg: bytes
) -> None:
    config = (
        f"keys:\n  - {{key: {TEAM}, name: team}}\n  - {{key: {ADMIN}, name: ops, admin: true}}\n"
        f"usage: {{database: '{postgres.url}'}}\n"
        f"models:\n  gw: {{model: openai/up-model, api_base: '{upstream.base}', api_key: k, vision: true}}\n"
    )
    nodes = [_serve(tmp_path, f"node{i}", config) for i in range(2)]
    try:
        for i, (_, url) in enumerate(nodes):
            for _ in range(i + 1):  # one request to the first node, two to the second
                body = {"model": "gw", "messages": image_message(data_url(hopper_jpeg))}
                r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TEAM}"})
                assert r.status_code == 200, r.text
        for _, url in nodes:  # a report first writes what its own node has queued
            usage(url)
        for _, url in nodes:  # each node reports what both recorded
            team = rows(usage(url))[("team", "gw")]
            assert (team["requests"], team["images"], team["image_bytes"]) == (3, 3, 3 * len(hopper_jpeg))
            assert team["total_tokens"] == 3 * 14
    finally:
        for proc, _ in nodes:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def test_usage_survives_a_postgresql_restart(postgres: Postgres) -> None:
    from vlmkit.server.usage import Usage, UsageStore

    store = UsageStore(postgres.url)
    try:
        store.record(Usage("restart", "gw", 1, 10, 2, 1, 100))
        assert [u for u in store.report() if u.key == "restart"] == [Usage("restart", "gw", 1, 10, 2, 1, 100)]
        postgres.restart()  # the store's connection is gone: a report, then a write, connect again
        assert [u for u in store.report() if u.key == "restart"] == [Usage("restart", "gw", 1, 10, 2, 1, 100)]
        postgres.restart()
        store.record(Usage("restart", "gw", 1, 5, 1, 0, 0))
        assert [u for u in store.report() if u.key == "restart"] == [Usage("restart", "gw", 2, 15, 3, 1, 100)]
    finally:
        store.close()
