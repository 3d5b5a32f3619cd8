"""Where a model runs: on the GPU when llama.cpp was built with a GPU backend, else on the CPU.

The setting (``LoadOptions.gpu``, ``--gpu`` on the command line, ``gpu:`` in the server's config) is
one of ``"auto"`` (every layer and the vision projector on the GPU when the build can offload,
everything on the CPU otherwise), ``"off"`` (the CPU), or a number of text-model layers to offload
(the projector then goes to the GPU too; ``0`` is ``"off"``). Each face hands what it read to
:func:`parse_gpu`, so every face refuses the same values with the same words; :func:`choose`
turns a setting into what llama.cpp is told, on this build.

Which backend a build has is read from ggml's device list (the CUDA, Metal, Vulkan or other device
beside the CPU), not from the package's name.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from vlmkit.engine import native
from vlmkit.errors import InvalidSettingError

GpuSetting = Literal["auto", "off"] | int

INSTALL_HINT = (
    'install a GPU build of llama-cpp-python: CMAKE_ARGS="-DGGML_CUDA=on" (or -DGGML_METAL=on, '
    "-DGGML_VULKAN=on) pip install llama-cpp-python==0.3.36 --no-binary llama-cpp-python --force-reinstall "
    "--no-cache-dir"
)


def parse_gpu(value: object, setting: str = "gpu") -> GpuSetting:
    """``value`` as a GPU setting: ``"auto"``, ``"off"`` or a number of layers (text such as ``"20"`` too).

    ``setting`` names where the value came from (``--gpu``, ``models.NAME.gpu``), for the error.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "off"):
            return "auto" if text == "auto" else "off"
        if text.isdigit():
            return int(text)
    elif value is False:  # YAML reads an unquoted `gpu: off` as false
        return "off"
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidSettingError(
        f"{setting}={value!r} is not a GPU setting; use 'auto' (the GPU when llama.cpp has one, else the CPU), "
        "'off' (the CPU only) or a number of layers to offload (0 or more)"
    )


@dataclass(frozen=True)
class GpuChoice:
    """What llama.cpp is told: layers to offload (-1: all) and whether the projector runs on the GPU."""

    layers: int
    projector: bool
    backend: str
    """The backend that runs the model: ``"CPU"``, or a GPU's (``"CUDA (NVIDIA H200)"``)."""
    reason: str
    """Why, in words: ``"CPU (this llama.cpp build has no GPU backend)"``."""

    @property
    def on_gpu(self) -> bool:
        return self.layers != 0


def choose(setting: GpuSetting) -> GpuChoice:
    """The placement ``setting`` means on this build (a number of layers asks for a GPU build)."""
    setting = parse_gpu(setting)
    gpu = gpu_backend()
    if setting == "off" or setting == 0:
        return GpuChoice(0, False, "CPU", "CPU (gpu='off')")
    if gpu is None:
        if setting == "auto":
            return GpuChoice(0, False, "CPU", "CPU (this llama.cpp build has no GPU backend)")
        raise InvalidSettingError(
            f"gpu={setting} offloads {setting} layers to a GPU, but this llama.cpp build runs on the CPU only; "
            f"use gpu='auto' or 'off', or {INSTALL_HINT}"
        )
    if setting == "auto":
        return GpuChoice(-1, True, gpu, f"{gpu} (every layer and the vision projector)")
    return GpuChoice(setting, True, gpu, f"{gpu} ({setting} layers and the vision projector; the rest on the CPU)")


def backend_summary() -> str:
    """The backend models run on with ``gpu='auto'``: ``"CPU"``, or the GPU backend and device."""
    return gpu_backend() or "CPU"


@lru_cache(maxsize=1)
def gpu_backend() -> str | None:
    """The GPU backend this llama.cpp build offloads to (``"CUDA (NVIDIA H200)"``), or None."""
    llama_cpp = native.llama()
    if not llama_cpp.llama_supports_gpu_offload():
        return None
    names = [f"{backend} ({description})" for backend, description, kind in _devices() if kind in _GPU_KINDS]
    return ", ".join(names) if names else "GPU"


# ggml_backend_dev_type (ggml-backend.h): CPU, GPU, IGPU, ACCEL, META
_GPU_KINDS = (1, 2)


def _devices() -> list[tuple[str, str, int]]:
    """ggml's devices: (backend name, description, type); empty where the build does not say."""
    from llama_cpp import llama_cpp as bindings

    lib: Any = getattr(bindings, "_lib", None)
    if lib is None:
        return []
    try:
        count = lib.ggml_backend_dev_count
        get = lib.ggml_backend_dev_get
        description = lib.ggml_backend_dev_description
        kind = lib.ggml_backend_dev_type
        reg = lib.ggml_backend_dev_backend_reg
        reg_name = lib.ggml_backend_reg_name
    except AttributeError:  # not exported by this build
        return []
    count.restype, count.argtypes = ctypes.c_size_t, []
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    description.restype, description.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    kind.restype, kind.argtypes = ctypes.c_int, [ctypes.c_void_p]
    reg.restype, reg.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    reg_name.restype, reg_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    out = []
    for i in range(count()):
        dev = get(i)
        out.append(
            (
                (reg_name(reg(dev)) or b"?").decode(errors="replace"),
                (description(dev) or b"").decode(errors="replace"),
                int(kind(dev)),
            )
        )
    return out
