"""vlmkit's batch as a Ray Data stage, for real: Ray on this machine (two CPUs), two actors, each
holding the generated test VLM; a rerun with a manifest directory answers from the manifests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import ray.data

from tests.batch.conftest import MODEL, ROOT, distinct_images


@pytest.fixture(scope="module")
def ray_local(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    cache = tmp_path_factory.mktemp("ray-cache")
    env = {"PYTHONPATH": str(ROOT / "src"), "VLMKIT_HOME": str(model_home), "VLMKIT_CACHE_DIR": str(cache)}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": env},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def loopback_only() -> None:
    """Ray's own processes talk over their sockets; the stage itself reads local files only."""


def test_map_batches_with_two_actors_answers_every_row_and_resumes_per_block(ray_local: None, tmp_path: Path) -> None:
    from vlmkit.batch.ray import VlmkitPredictor

    paths = distinct_images(tmp_path / "img", 5)
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff")  # a JPEG that stops after its first marker
    items = [{"image": str(p), "n": i} for i, p in enumerate([*paths, paths[0], bad])]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    kwargs = {
        "model": MODEL,
        "prompt": "Photo {n}.",
        "config": {"max_tokens": 2, "seed": 1},
        "threads": 1,
        "manifest_dir": str(manifests),
    }

    def run() -> list[dict[str, object]]:
        ds = ray.data.from_items(items, override_num_blocks=2)
        out = ds.map_batches(VlmkitPredictor, fn_constructor_kwargs=kwargs, concurrency=2, batch_size=4)
        return sorted(out.take_all(), key=lambda r: r["n"])

    rows = run()
    assert [r["n"] for r in rows] == list(range(7))
    for row in rows[:6]:
        assert isinstance(row["answer"], str) and row["error"] is None and len(row["image_id"]) == 64
    assert rows[5]["image_id"] == rows[0]["image_id"] and rows[5]["key"] != rows[0]["key"]  # another prompt
    error = json.loads(rows[6]["error"])
    assert error["type"] == "InvalidImageError" and rows[6]["answer"] is None
    written = sorted(p.read_text() for p in manifests.glob("*.jsonl"))
    assert sum(text.count("\n") for text in written) == 7

    again = run()  # each block finds its manifest: nothing is asked again, nothing appended
    assert [r["answer"] for r in again] == [r["answer"] for r in rows]
    assert sorted(p.read_text() for p in manifests.glob("*.jsonl")) == written
