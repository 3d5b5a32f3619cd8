"""The server's ``gpu:`` for a local model (and ``vlmkit serve --gpu`` for all): read, checked, obeyed."""

from __future__ import annotations

from typing import Any

import pytest

from vlmkit.engine import native
from vlmkit.errors import InvalidSettingError
from vlmkit.server import ConfigError
from vlmkit.server.config import parse_config
from vlmkit.server.local import LocalModels


def test_a_bad_gpu_names_the_entry_and_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"models": {"vision-local": {"path": "/m.gguf", "gpu": "fast"}}}, where="vlmkit.yaml")
    assert str(err.value) == (
        "vlmkit.yaml: models.vision-local.gpu: gpu='fast' is not a GPU setting; use 'auto' (the GPU when llama.cpp "
        "has one, else the CPU), 'off' (the CPU only) or a number of layers to offload (0 or more)"
    )
    parsed = parse_config({"models": {"a": {"path": "/a.gguf", "gpu": "off"}, "b": {"path": "/b.gguf", "gpu": 20}}})
    assert (parsed.local["a"].gpu, parsed.local["b"].gpu, parsed.gpu) == ("off", 20, "auto")


def test_each_local_model_loads_where_its_entry_says(tiny_files: Any) -> None:
    model, mmproj = str(tiny_files[0]), str(tiny_files[1])
    settings = parse_config(
        {
            "models": {
                "on-cpu": {"path": model, "mmproj": mmproj, "gpu": "off"},
                "three-layers": {"path": model, "mmproj": mmproj, "gpu": 3},
                "default": {"path": model, "mmproj": mmproj},
            }
        }
    ).with_overrides(gpu="off")  # as `vlmkit serve --gpu off` does
    local = LocalModels(settings)
    try:
        assert local.lease.load("on-cpu").key == "on-cpu"
        assert local.lease.load("default").key == "default"
        if native.llama().llama_supports_gpu_offload():
            assert local.lease.load("three-layers").key == "three-layers"
        else:  # the entry's own setting reached the engine, which refuses it on this build
            with pytest.raises(InvalidSettingError, match=r"^gpu=3 offloads 3 layers to a GPU"):
                local.lease.load("three-layers")
    finally:
        local.close()
