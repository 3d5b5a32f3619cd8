"""Where a model runs: the GPU when the llama.cpp build has one, else the CPU, and it says which.

These tests run on whatever build is installed: on a CPU-only build (the one the suite is usually
run on) ``auto`` must choose the CPU and say why; on a GPU build, the GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmkit.engine import Engine, LoadOptions, native
from vlmkit.engine.gpu import GpuChoice, backend_summary, choose, parse_gpu
from vlmkit.engine.model import NativeModel
from vlmkit.errors import InvalidSettingError

GPU_BUILD = bool(native.llama().llama_supports_gpu_offload())


def test_auto_is_the_default_and_chooses_what_the_build_has(tiny_model: tuple[Path, Path]) -> None:
    assert LoadOptions().gpu == "auto"
    model = NativeModel(*tiny_model, LoadOptions(cpu_threads=1))
    try:
        placement = model.placement
    finally:
        model.close()
    if GPU_BUILD:
        assert (placement.layers, placement.projector) == (-1, True)
        assert placement.backend != "CPU" and placement.backend == backend_summary()
    else:
        assert placement == GpuChoice(0, False, "CPU", "CPU (this llama.cpp build has no GPU backend)")
        assert backend_summary() == "CPU"


def test_off_and_zero_keep_everything_on_the_cpu() -> None:
    assert choose("off") == GpuChoice(0, False, "CPU", "CPU (gpu='off')")
    assert choose(0) == choose("off")


def test_layers_on_a_build_without_a_gpu_are_refused_with_the_way_to_get_one(
    tiny_model: tuple[Path, Path],
) -> None:
    engine = Engine(default_ttl=None)
    engine.register("tiny", *tiny_model)
    try:
        if GPU_BUILD:
            assert choose(2).layers == 2 and choose(2).projector
            return
        with pytest.raises(InvalidSettingError) as err:
            engine.load("tiny", options=LoadOptions(cpu_threads=1, gpu=2))
        message = str(err.value)
        assert message.startswith(
            "gpu=2 offloads 2 layers to a GPU, but this llama.cpp build runs on the CPU only; "
            "use gpu='auto' or 'off', or install a GPU build of llama-cpp-python: "
        )
        assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in message and "--no-binary llama-cpp-python" in message
        assert err.value.status_code == 400
        assert not engine.is_loaded("tiny")
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), (" AUTO ", "auto"), ("off", "off"), (False, "off"), ("0", 0), ("12", 12), (12, 12)],
)
def test_settings_read_from_text_or_numbers(value: object, expected: object) -> None:
    assert parse_gpu(value) == expected
    assert LoadOptions(gpu=value).gpu == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["fast", "", "-3", "1.5", -1, 1.5, True, None])
def test_anything_else_is_refused_saying_what_is_accepted(value: object) -> None:
    with pytest.raises(InvalidSettingError) as err:
        LoadOptions(gpu=value)  # type: ignore[arg-type]
    assert str(err.value) == (
        f"gpu={value!r} is not a GPU setting; use 'auto' (the GPU when llama.cpp has one, else the CPU), "
        "'off' (the CPU only) or a number of layers to offload (0 or more)"
    )
    with pytest.raises(InvalidSettingError, match=r"^--gpu="):
        parse_gpu(value, "--gpu")


def test_an_unquoted_off_in_a_yaml_config_means_the_cpu(tmp_path: Path) -> None:
    """YAML reads `gpu: off` as false; the server's config takes it as 'off', as the docs write it."""
    from vlmkit.server import load_config

    config = tmp_path / "vlmkit.yaml"
    config.write_text(f"models:\n  m:\n    path: {tmp_path / 'm.gguf'}\n    gpu: off\n")
    assert load_config(config).local["m"].gpu == "off"
