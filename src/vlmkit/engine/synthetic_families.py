"""Random-weight models shaped like each vision-language family users run, to test the engine on all.

The engine's bugs hide in what differs between families: how wide an image embedding is (Qwen3-VL's
deepstack makes it ``n_embd x 4``), how many positions an image takes against how many KV cache
cells (Qwen-VL's M-RoPE gives a 378-token photo 21 positions), whether image tokens attend both
ways (Gemma 3), whether some layers only see a window (Gemma 3's sliding-window layers, Qwen2.5-VL's
windowed vision encoder), and how an image is cut into chunks (SmolVLM's tiles). Each writer here
makes a model of a few hundred KB with its family's llama.cpp text architecture, projector type,
metadata keys, tensor names, special tokens and chat template (the keys and names are llama.cpp's:
``src/llama-arch.cpp``, ``tools/mtmd/clip-impl.h``), so the real loading and evaluation code runs:

========== ============ ====================== =========================================
family     text arch    projector              what it exercises
========== ============ ====================== =========================================
llava      llama        mlp                    the plain case (the default test model's shape)
smolvlm    llama        idefics3               an image as tiles: several chunks
qwen2-vl   qwen2vl      qwen2vl_merger         M-RoPE: fewer positions than tokens
qwen2.5-vl qwen2vl      qwen2.5vl_merger       M-RoPE, window attention in the encoder
qwen3-vl   qwen3vl      qwen3vl_merger         interleaved M-RoPE, deepstack (wide embeddings)
gemma3     gemma3       gemma3                 sliding-window layers, non-causal image tokens
internvl   qwen2        internvl               tiles and an overview; the encoder batches images
========== ============ ====================== =========================================

Weights are scaled to keep signals near unit size through every layer (``1/sqrt(fan_in)``), so a
reply depends on the image and on positions; the output head is untied and steered to say words
(:func:`~vlmkit.engine.synthetic.readable_head`), never control tokens or end-of-sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.engine.synthetic import (
    COMMON_WORDS,
    SMOLVLM_256M_TEXT,
    TEST_TEXT,
    TEST_VISION,
    TextSpec,
    VisionSpec,
    _add_matrix,
    _finish,
    byte_unicode_table,
    mmproj_writer,
    readable_head,
    text_model_writer,
    word_tokens,
)

# --- chat templates (short forms of what each model ships) ----------------------------------------

# Qwen2-VL-Instruct and Qwen2.5-VL-Instruct: ChatML with a default system prompt; image parts
# become the vision tokens (mtmd adds its own around the media marker).
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL-Instruct: ChatML without a default system prompt.
QWEN3_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Gemma 3 (instruction-tuned): turns of "user" and "model" that must alternate, a system message
# folded into the first user turn, text parts trimmed.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{% else %}{% set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{% endif %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_QWEN_TOKENS: dict[str, Any] = {
    "special_tokens": (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ),
    "eos": "<|im_end|>",
    "bos": "<|endoftext|>",
    "tokenizer_pre": "qwen2",
}

# InternVL3-Instruct: plain ChatML over string contents (the model's chat code adds its system prompt)
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_GEMMA3_SPECIALS = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)

# CLIP's image statistics, which the Qwen-VL encoders normalise with
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# The tiny sizes every family shares: text 64 wide in 2 layers (head size 16), vision 32 wide
_TINY_TEXT: dict[str, Any] = {
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_head_kv": 2,
    "n_ff": 128,
    "n_vocab": 0,
    "context_length": 4096,
    "quant": "F32",
    "words": COMMON_WORDS,
}


def _tiny_text(**spec: Any) -> TextSpec:
    return TextSpec(**{"rope_theta": 1000000.0, **_TINY_TEXT, **spec})


def _tiny_vision(projector: str, image_size: int, patch_size: int, **changes: Any) -> VisionSpec:
    dims = {"n_embd": 32, "n_ff": 64, "n_layer": 2, "n_head": 2, "projection_dim": 64}
    return VisionSpec(projector=projector, image_size=image_size, patch_size=patch_size, **{**dims, **changes})


@dataclass(frozen=True)
class TextArch:
    """What a llama.cpp text architecture needs beyond the llama layout."""

    arch: str
    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False  # Gemma's norms after attention and after the FFN
    keys: dict[str, Any] = field(default_factory=dict)  # "{arch}." is prefixed


@dataclass(frozen=True)
class Family:
    """A family's text model and projector, and the projector's extra metadata."""

    name: str
    text: TextSpec
    arch: TextArch
    vision: VisionSpec
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    activation: str = "gelu"  # "gelu", "silu" or "gelu_quick" (neither flag)
    deepstack_layers: tuple[int, ...] = ()


QWEN2_VL = Family(
    name="qwen2-vl",
    text=_tiny_text(chat_template=QWEN2_VL_TEMPLATE, name="Qwen2-VL (synthetic)", **_QWEN_TOKENS),
    # M-RoPE: head size 16 rotates 8 pairs, split time/height/width as Qwen2-VL splits 64 (16/24/24)
    arch=TextArch("qwen2vl", qkv_bias=True, keys={"rope.dimension_sections": [2, 3, 3, 0]}),
    # patch 14 merged 2x2: 28 pixels a token, as in the real model (a 512x600 photo is 378 tokens)
    vision=_tiny_vision("qwen2vl_merger", image_size=560, patch_size=14),
    mean=_CLIP_MEAN,
    std=_CLIP_STD,
    activation="gelu_quick",
)

QWEN25_VL = dataclasses.replace(
    QWEN2_VL,
    name="qwen2.5-vl",
    text=dataclasses.replace(QWEN2_VL.text, name="Qwen2.5-VL (synthetic)"),
    # every 2nd encoder layer attends to the whole image, the others within 112-pixel windows
    vision=dataclasses.replace(QWEN2_VL.vision, projector="qwen2.5vl_merger", extra={"clip.vision.n_wa_pattern": 2}),
    activation="silu",
)

QWEN3_VL = Family(
    name="qwen3-vl",
    text=_tiny_text(
        chat_template=QWEN3_VL_TEMPLATE,
        name="Qwen3-VL (synthetic)",
        n_layer=3,  # deepstack features join the first layers, never the last (llama.cpp cannot)
        **_QWEN_TOKENS,
    ),
    # interleaved M-RoPE (24/20/20 of 64 in the real model); 2 deepstack layers: embeddings 3 x 64 wide
    arch=TextArch("qwen3vl", qk_norm=True, keys={"rope.dimension_sections": [4, 2, 2, 0], "n_deepstack_layers": 2}),
    # patch 16 merged 2x2: 32 pixels a token; learned positions for a 16 x 16 grid, interpolated
    vision=_tiny_vision("qwen3vl_merger", image_size=256, patch_size=16, n_layer=3),
    deepstack_layers=(0, 1),
)

GEMMA3 = Family(
    name="gemma3",
    text=_tiny_text(
        chat_template=GEMMA3_TEMPLATE,
        special_tokens=_GEMMA3_SPECIALS,
        eos="<eos>",
        bos="<bos>",
        name="Gemma 3 (synthetic)",
    ),
    # layer 0 sees the last 128 positions, layer 1 everything (the real model: 5 local to 1 global)
    arch=TextArch(
        "gemma3",
        qk_norm=True,
        post_norms=True,
        keys={
            "attention.sliding_window": 128,
            "attention.sliding_window_pattern": 2,
            "rope.freq_base_swa": 10000.0,
            "attention.key_length": 16,
            "attention.value_length": 16,
        },
    ),
    # a fixed 128 x 128 input, 16 x 16 patches pooled 2 x 2: 64 tokens an image (the real one: 256)
    vision=_tiny_vision("gemma3", image_size=128, patch_size=8, scale_factor=2),
)

# LLaVA's shape: the llama text model and "mlp" projector of the default test model (ChatML, 16
# tokens an image), at the scale of the families above
LLAVA = Family(
    name="llava",
    text=dataclasses.replace(TEST_TEXT, name="LLaVA-shaped (synthetic)"),
    arch=TextArch("llama"),
    vision=TEST_VISION,
)

# SmolVLM's tokens and template at the tiny size: 64-pixel tiles of 16 tokens each, a photo cut
# into 2 x 2 tiles and an overview (five image chunks)
SMOLVLM = Family(
    name="smolvlm",
    text=dataclasses.replace(SMOLVLM_256M_TEXT, **_TINY_TEXT, name="SmolVLM (synthetic, tiny)"),
    arch=TextArch("llama"),
    vision=_tiny_vision("idefics3", image_size=64, patch_size=8, scale_factor=2, preproc_image_size=128),
)

# InternVL3's shape: a Qwen2.5 text model, InternViT with a class token, pixel shuffle 2 x 2 and an
# MLP; an image is cut into square tiles (here 64 pixels, 16 tokens each) plus an overview, marked
# by <img> ... </img>. Its encoder is one of those mtmd batches: several images in one pass.
INTERNVL = Family(
    name="internvl",
    text=_tiny_text(
        chat_template=INTERNVL_TEMPLATE,
        name="InternVL3 (synthetic)",
        **{**_QWEN_TOKENS, "special_tokens": (*_QWEN_TOKENS["special_tokens"], "<img>", "</img>", "<IMG_CONTEXT>")},
    ),
    arch=TextArch("qwen2", qkv_bias=True),
    vision=_tiny_vision(
        "internvl",
        image_size=64,
        patch_size=8,
        scale_factor=2,
        class_embedding=True,
        extra={"clip.vision.preproc_max_tiles": 4},
    ),
)

FAMILIES: dict[str, Family] = {f.name: f for f in (LLAVA, SMOLVLM, QWEN2_VL, QWEN25_VL, QWEN3_VL, GEMMA3, INTERNVL)}
"""Every family, by name."""


# --- writers ------------------------------------------------------------------------------------


def write_family(family: Family | str, directory: str | Path) -> tuple[Path, Path]:
    """Write a family's text model and projector into ``directory``; returns ``(model, mmproj)``."""
    f = FAMILIES[family] if isinstance(family, str) else family
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model, mmproj = d / f"{f.name}.gguf", d / f"mmproj-{f.name}.gguf"
    write_family_text(model, f.text, f.arch, seed=5)
    write_family_mmproj(mmproj, f, seed=6)
    return model, mmproj


# The readable head (see synthetic.readable_head) steers the output through a constant embedding
# dimension, so each layer's residual branch adds about 0.1 per dimension, the size of a token
# embedding's random part: the context (the image) moves the reply as much as the last token does.
# Gemma scales token embeddings by sqrt(n_embd) and norms each branch's output, so there the norms'
# weights set the branch's size, scaled up alike.
BRANCH_GAIN = 0.1
POST_NORM = 0.4


class _Weights:
    """Random tensors scaled to keep activations near unit size."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def tensor(self, *shape: int, scale: float) -> np.ndarray:
        out: np.ndarray = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        return out

    def matrix(self, n_out: int, n_in: int, gain: float = 1.0) -> np.ndarray:
        """``(n_out, n_in)``, as GGUF stores an ``n_in -> n_out`` weight."""
        return self.tensor(n_out, n_in, scale=gain / np.sqrt(n_in))

    def vector(self, n: int, scale: float = 0.1) -> np.ndarray:
        return self.tensor(n, scale=scale)


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float32)


def write_family_text(path: str | Path, spec: TextSpec, arch: TextArch, *, seed: int = 0) -> None:
    """Write a text model of ``arch`` (qwen2vl, qwen3vl, gemma3: llama's layout plus their parts)."""
    w = _Weights(seed)
    writer, tmp, tokens, _ = text_model_writer(path, spec, arch.arch)
    for key, value in arch.keys.items():
        name = f"{arch.arch}.{key}"
        if isinstance(value, list):
            writer.add_array(name, value)
        elif isinstance(value, float):
            writer.add_float32(name, value)
        else:
            writer.add_uint32(name, value)

    e, ff = spec.n_embd, spec.n_ff
    head = e // spec.n_head
    n_kv = head * spec.n_head_kv
    said = [tokens.index(t) for t in word_tokens(spec.words)]
    quote = tokens.index(byte_unicode_table()[ord('"')])
    embd, output = readable_head(w.rng, e, len(tokens), said, eos=tokens.index(spec.eos), quote=quote)
    _add_matrix(writer, "token_embd.weight", embd, "F16")
    _add_matrix(writer, "output.weight", output, "F16")
    writer.add_tensor("output_norm.weight", _ones(e))
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", _ones(e))
        for name, rows in (("attn_q", e), ("attn_k", n_kv), ("attn_v", n_kv)):
            writer.add_tensor(p + name + ".weight", w.matrix(rows, e))
            if arch.qkv_bias:
                writer.add_tensor(p + name + ".bias", w.vector(rows))
        if arch.qk_norm:
            writer.add_tensor(p + "attn_q_norm.weight", _ones(head))
            writer.add_tensor(p + "attn_k_norm.weight", _ones(head))
        writer.add_tensor(p + "attn_output.weight", w.matrix(e, e, BRANCH_GAIN))
        if arch.post_norms:  # these norms set the branch's size themselves
            writer.add_tensor(p + "post_attention_norm.weight", _ones(e) * np.float32(POST_NORM))
            writer.add_tensor(p + "post_ffw_norm.weight", _ones(e) * np.float32(POST_NORM))
        writer.add_tensor(p + "ffn_norm.weight", _ones(e))
        writer.add_tensor(p + "ffn_gate.weight", w.matrix(ff, e))
        writer.add_tensor(p + "ffn_up.weight", w.matrix(ff, e))
        writer.add_tensor(p + "ffn_down.weight", w.matrix(e, ff, BRANCH_GAIN))
    _finish(writer, tmp, Path(path))


def write_family_mmproj(path: str | Path, family: Family, *, seed: int = 0) -> None:
    """Write ``family``'s vision encoder and projector: LLaVA's MLP, SmolVLM's pixel shuffle, the
    Qwen-VL mergers (Qwen3-VL's with deepstack), Gemma 3's pooled SigLIP, InternVL's MLP."""
    spec = family.vision
    w = _Weights(seed)
    e, ff, ps, out = spec.n_embd, spec.n_ff, spec.patch_size, spec.projection_dim
    qwen = spec.projector in ("qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger")
    rms = spec.projector == "qwen2.5vl_merger"  # RMS norms (weights only) and a gated FFN

    writer, tmp = mmproj_writer(path, spec)
    writer.add_array("clip.vision.image_mean", list(family.mean))
    writer.add_array("clip.vision.image_std", list(family.std))
    if family.activation in ("gelu", "silu"):
        writer.add_bool(f"clip.use_{family.activation}", True)
    if spec.projector in ("gemma3", "idefics3", "internvl"):
        writer.add_uint32("clip.vision.projector.scale_factor", spec.scale_factor)
    if spec.preproc_image_size:
        writer.add_uint32("clip.vision.preproc_image_size", spec.preproc_image_size)
    for key, value in spec.extra.items():
        writer.add_uint32(key, value)

    def add(name: str, array: np.ndarray) -> None:
        writer.add_tensor(name, array.astype(np.float32))

    def norm(name: str, n: int) -> None:
        add(name + ".weight", _ones(n))
        if not rms:
            add(name + ".bias", w.vector(n))

    def linear(name: str, n_out: int, n_in: int, gain: float = 1.0) -> None:
        add(name + ".weight", w.matrix(n_out, n_in, gain))
        add(name + ".bias", w.vector(n_out))

    # the patch convolution; Qwen-VL's 3-D one (2 frames) is stored as two 2-D kernels
    conv_scale = 1.0 / np.sqrt(3 * ps * ps)
    writer.add_tensor("v.patch_embd.weight", w.tensor(e, 3, ps, ps, scale=conv_scale).astype(np.float16))
    if qwen:
        writer.add_tensor("v.patch_embd.weight.1", w.tensor(e, 3, ps, ps, scale=conv_scale).astype(np.float16))
    if spec.projector not in ("qwen2vl_merger", "qwen2.5vl_merger"):  # (those two rotate positions instead)
        n_pos = (spec.image_size // ps) ** 2 + (1 if spec.class_embedding else 0)
        add("v.patch_embd.bias", w.vector(e))
        add("v.position_embd.weight", w.tensor(n_pos, e, scale=0.1))
    if spec.class_embedding:
        add("v.class_embd", w.vector(e, scale=1.0))

    for i in range(spec.n_layer):
        p = f"v.blk.{i}."
        norm(p + "ln1", e)
        if spec.projector == "qwen3vl_merger":
            linear(p + "attn_qkv", 3 * e, e)
        else:
            for name in ("attn_q", "attn_k", "attn_v"):
                linear(p + name, e, e)
        linear(p + "attn_out", e, e)
        norm(p + "ln2", e)
        if rms:
            linear(p + "ffn_gate", ff, e)
        linear(p + "ffn_up", ff, e)
        linear(p + "ffn_down", e, ff)
    norm("v.post_ln", e)

    if qwen:  # 2 x 2 neighbouring patches merged, then an MLP into the text model's width
        merged = 4 * e
        linear("mm.0", merged, merged)
        linear("mm.2", out, merged)
        for i in family.deepstack_layers:  # features of encoder layer i, each another `out` wide
            add(f"v.deepstack.{i}.norm.weight", _ones(merged))
            add(f"v.deepstack.{i}.norm.bias", w.vector(merged))
            linear(f"v.deepstack.{i}.fc1", merged, merged)
            linear(f"v.deepstack.{i}.fc2", out, merged)
    elif spec.projector == "gemma3":  # average-pooled, RMS-normed, projected
        add("mm.soft_emb_norm.weight", _ones(e))
        add("mm.input_projection.weight", w.matrix(out, e).T.copy())  # stored as (e, out)
    elif spec.projector == "mlp":  # LLaVA: a 2-layer MLP per patch
        linear("mm.0", out, e)
        linear("mm.2", out, out)
    elif spec.projector == "internvl":  # pixel shuffle, then a layer norm and a 2-layer MLP
        shuffled = e * spec.scale_factor**2
        norm("mm.model.mlp.0", shuffled)
        linear("mm.model.mlp.1", out, shuffled)
        linear("mm.model.mlp.3", out, out)
    elif spec.projector == "idefics3":  # pixel shuffle (s x s patches side by side), one linear
        add("mm.model.fc.weight", w.matrix(out, e * spec.scale_factor**2))
    else:
        raise ValueError(f"unsupported projector {spec.projector!r}")
    _finish(writer, tmp, Path(path))
