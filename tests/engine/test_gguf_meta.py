"""The GGUF metadata reader against the ``gguf`` package's own reader, on every kind of value, and on
files cut short or of the wrong version: a clear ``ModelLoadError``, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from vlmkit.engine.gguf_meta import _fields, read_mmproj_meta, read_model_meta
from vlmkit.engine.synthetic import write_test_model
from vlmkit.errors import ModelLoadError


def every_kind(path: Path) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -70000)
    w.add_float32("t.f32", 0.5)
    w.add_uint64("t.u64", 2**40)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 1e-3)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo, wörld")
    w.add_array("t.ints", [1, 2, 3, 40000])
    w.add_array("t.strs", ["a", "bé", "", "c" * 300])
    w.add_context_length(4096)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(5000)])
    w.add_token_scores([float(i) for i in range(5000)])
    w.add_chat_template("{{ messages }}")
    w.add_tensor("t.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(str(path), "r")
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def test_every_kind_of_value_reads_as_the_gguf_package_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "every.gguf"
    every_kind(path)
    expected = reference(path)
    got = _fields(path, set(expected))
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == value, key
    assert got["t.strs"] == ["a", "bé", "", "c" * 300]
    assert got["llama.context_length"] == 4096


def test_only_the_keys_asked_for_and_the_context_length_are_returned(tmp_path: Path) -> None:
    path = tmp_path / "every.gguf"
    every_kind(path)
    assert _fields(path, {"t.str"}) == {"t.str": "héllo, wörld", "llama.context_length": 4096}


def test_a_generated_models_metadata(tmp_path: Path) -> None:
    model, mmproj = write_test_model(tmp_path)
    meta = read_model_meta(model)
    ref = reference(model)
    assert meta.architecture == ref["general.architecture"]
    assert meta.chat_template == ref.get("tokenizer.chat_template")
    assert meta.context_length == ref.get(f"{meta.architecture}.context_length")
    assert meta.bos_token_id == ref.get("tokenizer.ggml.bos_token_id")
    assert not meta.is_projector
    proj = read_mmproj_meta(mmproj)
    assert proj.vision
    assert proj.projector_type == (reference(mmproj).get("clip.projector_type") or proj.projector_type)


def test_a_file_cut_short_anywhere_in_its_metadata_is_a_model_load_error(tmp_path: Path) -> None:
    whole = tmp_path / "every.gguf"
    every_kind(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.gguf"
    kv_end = data.index(b"t.weight")  # the tensor infos start here: everything before is metadata
    for length in list(range(4, 64)) + list(range(64, kv_end, 97)):
        cut.write_bytes(data[:length])
        with pytest.raises(ModelLoadError, match="is not a readable GGUF file"):
            _fields(cut, {"t.str"})


def test_not_a_gguf_file_and_a_too_old_version_say_so(tmp_path: Path) -> None:
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelLoadError, match="does not start with the GGUF magic"):
        read_model_meta(text)
    old = tmp_path / "old.gguf"
    old.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(16))
    with pytest.raises(ModelLoadError, match="version 1 is too old"):
        read_model_meta(old)
