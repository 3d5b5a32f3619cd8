"""The encoder cache on disk: embeddings that outlive the process, never read back torn, bounded.

Each test has its own cache directory (``VLMKIT_CACHE_DIR``, set for every test in tests/conftest.py).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlmkit.chat import Chat
from vlmkit.engine import Engine, LoadOptions
from vlmkit.engine import encoder_cache as ec
from vlmkit.engine.encoder_cache import EncoderCache
from vlmkit.errors import InvalidSettingError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig, PredictionResult

GREEDY = PredictionConfig(temperature=0, max_tokens=6)
ROOT = Path(__file__).resolve().parents[2]


def answer(files: tuple[Path, Path], chat: Chat, **options: Any) -> PredictionResult:
    """The reply of a new engine that loads the model afresh (and flushes its cache writes on close)."""
    with Engine(default_ttl=None, load_options=LoadOptions(cpu_threads=1, **options)) as engine:
        engine.register("tiny", *files)
        return engine.respond("tiny", chat, GREEDY)


def entries(directory: Path) -> list[Path]:
    return sorted((directory / "embeddings").glob("*.emb"))


def test_a_new_process_encodes_nothing_and_answers_the_same(
    tiny_model: tuple[Path, Path], encoder_cache_dir: Path
) -> None:
    script = (
        "import json, sys\n"
        "from vlmkit.engine import Engine, LoadOptions\n"
        "from vlmkit.chat import Chat\n"
        "from vlmkit.images import prepare_image\n"
        "from vlmkit.prediction import PredictionConfig\n"
        "engine = Engine(default_ttl=None, load_options=LoadOptions(cpu_threads=1))\n"
        "engine.register('tiny', sys.argv[1], sys.argv[2])\n"
        "chat = Chat()\n"
        "chat.add_user_message('Describe this image.', images=[prepare_image(sys.argv[3])])\n"
        "r = engine.respond('tiny', chat, PredictionConfig(temperature=0, max_tokens=6))\n"
        "print(json.dumps([r.content, r.stats.images_encoded, r.stats.images_reused]))\n"
    )  # no close: the writes still pending at exit are finished by the cache itself
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [sys.executable, "-c", script, *map(str, tiny_model), str(ROOT / "examples/images/grace_hopper.jpg")]

    def run() -> list[Any]:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        result: list[Any] = json.loads(done.stdout)
        return result

    first = run()
    assert first[1:] == [1, 0] and len(entries(encoder_cache_dir)) == 1
    second = run()
    assert second[1:] == [0, 1]
    assert second[0] == first[0]


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:]


def _empty(data: bytes) -> bytes:
    return b""


def _other_key(data: bytes) -> bytes:
    return data.replace(b"projector=", b"projectoR=", 1)  # a whole, intact entry, but not this key's


@pytest.mark.parametrize("damage", [_truncate, _flip, _empty, _other_key])
def test_a_damaged_entry_is_ignored_and_written_again(
    tiny_model: tuple[Path, Path],
    encoder_cache_dir: Path,
    image_chat: Any,
    hopper: ImageHandle,
    damage: Callable[[bytes], bytes],
) -> None:
    first = answer(tiny_model, image_chat(hopper))
    [entry] = entries(encoder_cache_dir)
    entry.write_bytes(damage(entry.read_bytes()))

    again = answer(tiny_model, image_chat(hopper))
    assert (again.stats.images_encoded, again.stats.images_reused) == (1, 0)  # not read: encoded again
    assert again.content == first.content

    third = answer(tiny_model, image_chat(hopper))
    assert (third.stats.images_encoded, third.stats.images_reused) == (0, 1)  # the entry was written again
    assert third.content == first.content


def test_off_writes_nothing_and_a_bad_bound_is_refused(
    tiny_model: tuple[Path, Path],
    encoder_cache_dir: Path,
    image_chat: Any,
    hopper: ImageHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert answer(tiny_model, image_chat(hopper), encoder_cache_mb=0).stats.images_encoded == 1
    monkeypatch.setenv("VLMKIT_ENCODER_CACHE_MB", "0")
    assert answer(tiny_model, image_chat(hopper)).stats.images_encoded == 1
    assert entries(encoder_cache_dir) == []

    with pytest.raises(InvalidSettingError) as err:
        LoadOptions(encoder_cache_mb=-1)
    assert str(err.value) == (
        "encoder_cache_mb=-1 must be a whole number of megabytes, 0 or more "
        "(0 turns the on-disk cache of image embeddings off)"
    )
    monkeypatch.setenv("VLMKIT_ENCODER_CACHE_MB", "lots")
    with pytest.raises(InvalidSettingError) as err:
        answer(tiny_model, image_chat(hopper))
    assert str(err.value).startswith("VLMKIT_ENCODER_CACHE_MB='lots' must be a whole number of megabytes")


def test_a_changed_projector_file_is_another_projector(
    tiny_model: tuple[Path, Path], tmp_path: Path, image_chat: Any, hopper: ImageHandle
) -> None:
    files = (Path(shutil.copy(tiny_model[0], tmp_path)), Path(shutil.copy(tiny_model[1], tmp_path)))
    assert answer(files, image_chat(hopper)).stats.images_encoded == 1
    assert answer(files, image_chat(hopper)).stats.images_encoded == 0
    later = time.time() + 60
    os.utime(files[1], (later, later))  # replaced (or touched): its embeddings may differ now
    assert answer(files, image_chat(hopper)).stats.images_encoded == 1
    assert answer(files, image_chat(hopper), image_max_tokens=64).stats.images_encoded == 1  # other preprocessing


def _write_many(directory: str, key: str, fill: float, times: int) -> None:
    cache = EncoderCache(directory, 1 << 30)
    values = np.full(1 << 20, fill, dtype=np.float32)  # 4 MB: writes that take long enough to overlap
    for _ in range(times):
        cache.write(key, values)


def test_processes_writing_one_key_at_once_leave_a_whole_entry(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_write_many, args=(str(tmp_path), "key", fill, 25)) for fill in (1.0, 2.0)]
    for w in writers:
        w.start()
    reader = EncoderCache(tmp_path, 1 << 30)
    seen: set[float] = set()
    while any(w.is_alive() for w in writers):
        values = reader.get("key", 1 << 20)
        if values is not None:  # what a reader sees is one writer's entry, whole, or nothing
            assert values[0] in (1.0, 2.0) and (values == values[0]).all()
            seen.add(float(values[0]))
    for w in writers:
        w.join()
        assert w.exitcode == 0
    final = reader.get("key", 1 << 20)
    assert final is not None and final[0] in (1.0, 2.0) and (final == final[0]).all()
    assert [p.name for p in tmp_path.iterdir()] == [reader.path("key").name]  # no temporary file left behind
    assert seen


def test_the_bound_evicts_the_least_recently_read(tmp_path: Path) -> None:
    one = np.arange(1000, dtype=np.float32)
    size = len(ec._HEADER.pack(ec.MAGIC, 0, 0, 0)) + len("a") + one.nbytes
    cache = EncoderCache(tmp_path, int(2.5 * size))
    cache.write("a", one)
    cache.write("b", one + 1)
    now = time.time()
    os.utime(cache.path("a"), (now - 100, now - 100))
    os.utime(cache.path("b"), (now - 50, now - 50))
    assert cache.get("a", 1000) is not None  # read: now the most recently used
    cache.write("c", one + 2)  # three entries are over the bound: the least recently used goes
    assert cache.get("b") is None
    got_a, got_c = cache.get("a"), cache.get("c")
    assert got_a is not None and (got_a == one).all()
    assert got_c is not None and (got_c == one + 2).all()

    cache.put("big", np.zeros(10_000, dtype=np.float32))  # larger than the whole bound: never stored
    cache.flush()
    assert cache.get("big") is None and len(list(tmp_path.glob("*.emb"))) == 2


def test_a_pending_write_is_read_before_it_reaches_the_disk(tmp_path: Path) -> None:
    cache = EncoderCache(tmp_path, 1 << 30)
    values = np.arange(10, dtype=np.float32)
    cache.put("k", values)
    got = cache.get("k", 10)  # from memory or from disk, whichever it is by now
    assert got is not None and (got == values).all()
    cache.flush()
    assert cache.path("k").is_file()
    assert cache.get("k", 11) is None and not cache.path("k").exists()  # not the size asked for: dropped


def test_where_the_cache_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("VLMKIT_CACHE_DIR", "VLMKIT_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ec.embeddings_dir() == tmp_path / "home" / ".cache" / "vlmkit" / "embeddings"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ec.embeddings_dir() == tmp_path / "xdg" / "vlmkit" / "embeddings"
    monkeypatch.setenv("VLMKIT_HOME", str(tmp_path / "vlmkit"))
    assert ec.embeddings_dir() == tmp_path / "vlmkit" / "cache" / "embeddings"
    monkeypatch.setenv("VLMKIT_CACHE_DIR", str(tmp_path / "mine"))
    assert ec.embeddings_dir() == tmp_path / "mine" / "embeddings"
