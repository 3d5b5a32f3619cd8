"""Write vision-language models with random weights but real architectures, as GGUF files.

Model weights cannot be downloaded on every machine (CI, air-gapped boxes), yet the engine must be
tested on the real path: load, tokenize, encode an image, evaluate, sample, detokenize. These
writers produce such models with the ``gguf`` package:

- :func:`write_test_model`: a llama-architecture text model of a few hundred KB with a byte-level
  BPE tokenizer and a ChatML template, and an mmproj with the LLaVA "mlp" projector;
- :func:`write_smolvlm_256m`: SmolVLM-256M-Instruct's exact dimensions (text Q8_0, idefics3
  projector), for benchmarks.

Random weights say nothing meaningful, but the test model's noise reads as words: its vocabulary
holds :data:`COMMON_WORDS` as whole tokens beside the 256 byte tokens (which still tokenize any
prompt), and its output head (:func:`readable_head`) keeps the byte and control tokens out of what
it samples. It never emits end-of-sequence on purpose, except to finish a grammar-constrained reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# SmolVLM-Instruct's own template (from its tokenizer_config.json).
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class TextSpec:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    context_length: int
    rope_theta: float
    chat_template: str
    special_tokens: tuple[str, ...]
    eos: str
    bos: str | None = None
    tokenizer_pre: str = "default"
    quant: str = "F32"  # F32, F16 or Q8_0 for the 2-D weight matrices
    name: str = "vlmkit-synthetic"
    extra_tokens: tuple[str, ...] = ()  # normal (non-special) multi-byte tokens, GPT-2 byte form
    words: tuple[str, ...] = ()
    """Whole words, each a token after a space; with any, :func:`readable_head` makes them all it says."""
    word_merges: bool = False
    """BPE merges that spell each word (its prefixes become tokens too), so that tokenizing a reply
    gives back the words it was sampled as, as with a real model's vocabulary; without, a prompt's
    text falls back to byte tokens."""


@dataclass(frozen=True)
class VisionSpec:
    projector: str  # "mlp" or "idefics3"
    image_size: int
    patch_size: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    projection_dim: int
    scale_factor: int = 1
    preproc_image_size: int | None = None
    class_embedding: bool = False
    quant: str = "F32"
    extra: dict[str, Any] = field(default_factory=dict)


# --- readable vocabulary ------------------------------------------------------------------------

_WORDS_TEXT = """
    the of and to in is was for on are with as his they be at one have this from or had by word but what some
    we can out other were all there when up use your how said an each she which do their time if will way
    about many then them write would like so these her long make thing see him two has look more day could go
    come did number sound no most people my over know water than call first who may down side been now find
    any new work part take get place made live where after back little only round man year came show every
    good me give our under name very through just form sentence great think say help low line differ turn
    cause much mean before move right boy old too same tell does set three want air well also play small end
    put home read hand port large spell add even land here must big high such follow act why ask men change
    went light kind off need house picture try us again animal point mother world near build self earth father
    head stand own page should country found answer school grow study still learn plant cover food sun four
    between state keep eye never last let thought city tree cross farm hard start might story saw far sea draw
    left late run while press close night real life few north open seem together next white children begin got
    walk example ease paper group always music those both mark often letter until mile river car feet care
    second book carry took science eat room friend began idea fish mountain stop once base hear horse cut sure
    watch color face wood main enough plain girl usual young ready above ever red list though feel talk bird
    soon body dog family direct pose leave song measure door product black short numeral class wind question
    happen complete ship area half rock order fire south problem piece told knew pass since top whole king
    space heard best hour better true during hundred five remember step early hold west ground interest reach
    fast verb sing listen six table travel less morning ten simple several vowel toward lay against pattern
    slow center love person money serve appear road map rain rule govern pull cold notice voice unit power
    town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct
    able pound done beauty drive stood contain front teach week final gave green quick develop ocean warm free
    minute strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel
    full force blue object decide surface deep moon island foot system busy test record boat common gold
    possible plane stead dry wonder laugh thousand ago ran check game shape equate hot miss brought heat snow
    tire bring yes distant fill east paint language among grand ball yet wave drop heart present heavy dance
    engine position arm wide sail material size vary settle speak weight general ice matter circle pair
    include divide syllable felt perhaps pick sudden count square reason length represent art subject region
    energy hunt probable bed brother egg ride cell believe fraction forest sit race window store summer train
    sleep prove lone leg exercise wall catch mount wish sky board joy winter sat written wild instrument kept
    glass grass cow job edge sign visit past soft fun bright gas weather month million bear finish happy hope
    flower clothe strange gone jump baby eight village meet root buy raise solve metal whether push seven
    paragraph third shall held hair describe cook floor either result burn hill safe cat century consider type
    law bit coast copy phrase silent tall sand soil roll temperature finger industry value fight lie beat
    excite natural view sense ear else quite broke case middle son lake moment scale loud spring observe child
    straight consonant nation dictionary milk speed method organ pay age section dress cloud surprise quiet
    stone tiny climb cool design poor lot experiment bottom key iron single stick flat twenty skin smile
    crease hole trade melody trip office receive row mouth exact symbol least trouble shout except wrote seed
    tone join suggest clean break lady yard rise bad blow oil touch grew cent mix team wire cost lost brown
    wear garden equal sent choose fell fit flow fair bank collect save control decimal gentle woman captain
    practice separate difficult doctor please protect noon whose locate ring character insect caught period
    indicate radio spoke atom human history effect electric expect crop modern element hit student corner
    party supply bone rail imagine provide agree thus capital chair fruit rich thick process operate guess
    necessary sharp wing create neighbor wash bat rather crowd corn compare poem string bell depend meat rub
    tube famous dollar stream sight thin triangle planet hurry chief colony clock mine tie enter major fresh
    search send yellow allow print spot desert suit current lift rose continue block chart hat sell success
    company subtract event particular deal swim term opposite wife shoe shoulder spread arrange camp invent
    cotton born determine quart nine truck noise level chance gather shop stretch throw shine property column
    molecule select wrong gray repeat require broad prepare salt nose plural claim continent oxygen sugar
    pretty skill women season solution magnet silver thank branch match suffix especially fig huge sister
    steel discuss forward similar guide experience score apple bought led pitch coat mass card band rope slip
    win dream evening condition feed tool total basic smell valley nor double seat arrive master track parent
    shore division sheet substance favor connect post spend chord glad original share station dad bread charge
    proper bar offer segment duck instant market degree populate chick dear reply drink occur support speech
    nature range steam motion path liquid log meant quotient teeth shell neck
"""

COMMON_WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split())
"""Common English words (lower case, ASCII letters), written as whole tokens into synthetic vocabularies."""


def word_tokens(words: Sequence[str] = COMMON_WORDS, *, space: str = "Ġ") -> list[str]:
    """Each word as the vocabulary piece of the word after a space.

    ``space`` is how the tokenizer writes a leading space: ``"Ġ"`` in byte-level BPE (GPT-2 form),
    ``"▁"`` in SentencePiece. Decoding such a piece gives ``" word"``, so sampled words come out
    separated by spaces. The pieces need no merges: tokenizing a prompt falls back to the byte (or
    byte-fallback) tokens, and only the sampler ever picks a whole word.
    """
    return [space + word for word in words]


def readable_head(
    rng: np.random.Generator, n_embd: int, n_vocab: int, words: Iterable[int], *, eos: int, quote: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Token embeddings and an output matrix (numpy ``(n_vocab, n_embd)`` each) that make a model say words.

    Random weights give nearly uniform logits, so a vocabulary of bytes and words would print stray
    bytes (broken UTF-8) and control tokens. Two embedding dimensions steer instead. Dimension 0 is 1
    in every token's embedding and outweighs the random rest, so after the final RMS norm it is
    about ``0.8 * sqrt(n_embd)`` whatever the context (6.3 at 64); its weight in each output row is
    then a fixed logit bias: 0 for ``words``, -4 (times that) for everything else, -2 for ``eos``,
    which is never said in free text yet beats the bytes once a grammar allows nothing else.
    Dimension 1 is 1 only in the ``quote`` token (``"``): right after a quote, the quote is by far
    the likeliest token, so a JSON grammar's strings close (as ``""``) instead of running on as
    words. The other dimensions are random, scaled so that the words' logits spread by about 1.5
    at any width: which word comes next, varied by the context.
    """
    if n_embd < 8:
        raise ValueError(f"readable_head needs n_embd >= 8, not {n_embd}")
    embd = rng.standard_normal((n_vocab, n_embd), dtype=np.float32) * np.float32(0.8 / np.sqrt(n_embd))
    out = rng.standard_normal((n_vocab, n_embd), dtype=np.float32) * np.float32(2.4 / np.sqrt(n_embd))
    embd[:, :2] = 0.0
    embd[:, 0] = 1.0
    out[:, :2] = 0.0
    said = np.zeros(n_vocab, dtype=bool)
    said[list(words)] = True
    out[~said, 0] = -4.0
    out[eos, 0] = -2.0
    if quote is not None:
        embd[quote, 1] = 1.0
        out[quote, 1] = 8.0
    return embd, out


TEST_TEXT = TextSpec(
    n_embd=64,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    n_ff=128,
    n_vocab=0,  # just the byte tokens, merges and specials
    context_length=4096,
    rope_theta=10000.0,
    chat_template=CHATML_TEMPLATE,
    special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    eos="<|im_end|>",
    name="vlmkit-test-vlm",
    words=COMMON_WORDS,
)

TEST_VISION = VisionSpec(
    projector="mlp",
    image_size=32,
    patch_size=8,  # 4 x 4 = 16 image tokens
    n_embd=32,
    n_ff=64,
    n_layer=2,
    n_head=2,
    projection_dim=64,
    class_embedding=True,
)

_ROWS_COLS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))

SMOLVLM_256M_TEXT = TextSpec(
    n_embd=576,
    n_layer=30,
    n_head=9,
    n_head_kv=3,
    n_ff=1536,
    n_vocab=49280,
    context_length=8192,
    rope_theta=100000.0,
    chat_template=SMOLVLM_TEMPLATE,
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
        *_ROWS_COLS,
    ),
    eos="<end_of_utterance>",
    bos="<|im_start|>",
    tokenizer_pre="smollm",
    quant="Q8_0",
    name="SmolVLM-256M-Instruct (synthetic)",
    extra_tokens=("ĊĊ",),  # "\n\n" as one token, which mtmd's idefics3 path looks up
)

SMOLVLM_256M_VISION = VisionSpec(
    projector="idefics3",
    image_size=512,
    patch_size=16,
    n_embd=768,
    n_ff=3072,
    n_layer=12,
    n_head=12,
    projection_dim=576,
    scale_factor=4,
    preproc_image_size=512,
    quant="F16",
)


def write_test_model(directory: str | Path) -> tuple[Path, Path]:
    """Write the tiny test VLM; returns ``(model_path, mmproj_path)``. Deterministic."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model = d / "vlmkit-test-vlm.gguf"
    mmproj = d / "mmproj-vlmkit-test-vlm.gguf"
    write_text_model(model, TEST_TEXT, seed=1)
    write_mmproj(mmproj, TEST_VISION, seed=2)
    return model, mmproj


def write_test_text_model(directory: str | Path) -> Path:
    """The tiny test model's text half alone: a model without vision support."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "vlmkit-test-text.gguf"
    write_text_model(path, TEST_TEXT, seed=1)
    return path


# With words, the template's role names and the benchmark's questions are single tokens, as in
# SmolVLM's real vocabulary (a prompt's length in tokens is then the real model's, not byte by byte).
_ROLE_WORDS = ("User", "Assistant")
_BENCH_WORDS = ("What", "Who", "Describe", "Answer", "person", "wearing", "briefly", "image")


def write_smolvlm_256m(directory: str | Path, *, words: bool = False) -> tuple[Path, Path]:
    """Write a model with SmolVLM-256M-Instruct's dimensions; returns ``(model_path, mmproj_path)``.

    With ``words``, its output head says words (:func:`readable_head`) as a real model's replies are
    text, so a follow-up's prompt holds the previous reply as its chat template writes it.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model = d / f"SmolVLM-256M-Instruct-synthetic{'-words' if words else ''}-Q8_0.gguf"
    mmproj = d / "mmproj-SmolVLM-256M-Instruct-synthetic-f16.gguf"
    if not model.exists():
        spec = (
            dataclasses.replace(
                SMOLVLM_256M_TEXT,
                words=(*COMMON_WORDS, *_BENCH_WORDS),
                extra_tokens=(*SMOLVLM_256M_TEXT.extra_tokens, *_ROLE_WORDS),
                word_merges=True,
            )
            if words
            else SMOLVLM_256M_TEXT
        )
        write_text_model(model, spec, seed=1)
    if not mmproj.exists():
        write_mmproj(mmproj, SMOLVLM_256M_VISION, seed=2)
    return model, mmproj


# --- tokenizer ----------------------------------------------------------------------------------


def byte_unicode_table() -> list[str]:
    """GPT-2's reversible byte -> printable character table, as byte-level BPE vocabularies store it."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


_COMMON_MERGES = (
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġt", "he"),
    ("Ċ", "Ċ"),
)


def _vocabulary(spec: TextSpec) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges: bytes, a few merges, ``spec.words``, extras, specials, filler."""
    tokens = byte_unicode_table()
    types = [1] * len(tokens)  # normal
    merges: list[str] = []
    for a, b in _COMMON_MERGES:
        merged = a + b
        merges.append(f"{a} {b}")
        if merged not in tokens:
            tokens.append(merged)
            types.append(1)
    for extra in (*word_tokens(spec.words), *spec.extra_tokens):
        if extra not in tokens:
            tokens.append(extra)
            types.append(1)
    if spec.word_merges:  # ranked before the common merges, which would otherwise split a word first
        spelled: list[str] = []
        _spell_words([*word_tokens(spec.words), *spec.extra_tokens], tokens, types, spelled)
        merges[:0] = [m for m in spelled if m not in merges]
    for special in spec.special_tokens:
        tokens.append(special)
        types.append(3)  # control
    filler = spec.n_vocab - len(tokens)
    for i in range(max(0, filler)):
        tokens.append(f"<|unused_{i}|>")
        types.append(5)  # unused
    return tokens, types, merges


def _spell_words(pieces: Sequence[str], tokens: list[str], types: list[int], merges: list[str]) -> None:
    """Merges (appended to ``merges``) building each piece from its first two characters up, shorter
    prefixes ranked first, so BPE joins a word's characters from the left into exactly that piece."""
    known = set(tokens)
    have: set[tuple[str, str]] = set()
    for length in range(2, max((len(p) for p in pieces), default=0) + 1):
        for piece in pieces:
            if len(piece) < length:
                continue
            left, right = piece[: length - 1], piece[length - 1]
            if (left, right) in have:
                continue
            have.add((left, right))
            merges.append(f"{left} {right}")
            if left + right not in known:
                known.add(left + right)
                tokens.append(left + right)
                types.append(1)


# --- writers ------------------------------------------------------------------------------------


def _add_matrix(writer: Any, name: str, array: np.ndarray, quant: str) -> None:
    import gguf

    if quant == "Q8_0" and array.ndim == 2 and array.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(array.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    elif quant in ("F16", "Q8_0") and array.ndim >= 2:
        writer.add_tensor(name, array.astype(np.float16))
    else:
        writer.add_tensor(name, array.astype(np.float32))


def text_model_writer(path: str | Path, spec: TextSpec, arch: str) -> tuple[Any, Path, list[str], list[int]]:
    """A GGUF writer for a text model of ``arch``: ``spec``'s hyperparameters and tokenizer written.

    Returns ``(writer, part_path, tokens, token_types)``; add the tensors, then :func:`_finish` it.
    """
    import gguf

    tokens, types, merges = _vocabulary(spec)
    n_vocab = len(tokens)
    head_dim = spec.n_embd // spec.n_head

    tmp = Path(str(path) + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_name(spec.name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(7 if spec.quant == "Q8_0" else (1 if spec.quant == "F16" else 0))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(spec.tokenizer_pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokens.index(spec.eos))
    if spec.bos is not None:
        writer.add_bos_token_id(tokens.index(spec.bos))
    writer.add_add_bos_token(False)
    writer.add_chat_template(spec.chat_template)
    return writer, tmp, tokens, types


def write_text_model(path: str | Path, spec: TextSpec, *, seed: int = 0) -> None:
    """Write a llama-architecture text model with random weights."""
    rng = np.random.default_rng(seed)
    writer, tmp, tokens, _ = text_model_writer(path, spec, "llama")
    n_vocab = len(tokens)
    n_kv = spec.n_embd // spec.n_head * spec.n_head_kv

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    # numpy shapes are (rows, cols) = (out, in); GGUF reverses them into ne
    if spec.words:
        said = [tokens.index(t) for t in word_tokens(spec.words)]
        quote = tokens.index(byte_unicode_table()[ord('"')])
        embd, output = readable_head(rng, spec.n_embd, n_vocab, said, eos=tokens.index(spec.eos), quote=quote)
        # the two largest matrices once a vocabulary holds words: F16 halves them, and loses nothing here
        _add_matrix(writer, "token_embd.weight", embd, "F16")
        _add_matrix(writer, "output.weight", output, "F16")
    else:  # the output is token_embd, tied
        _add_matrix(writer, "token_embd.weight", rand(n_vocab, spec.n_embd), spec.quant)
    writer.add_tensor("output_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        _add_matrix(writer, p + "attn_q.weight", rand(spec.n_embd, spec.n_embd), spec.quant)
        _add_matrix(writer, p + "attn_k.weight", rand(n_kv, spec.n_embd), spec.quant)
        _add_matrix(writer, p + "attn_v.weight", rand(n_kv, spec.n_embd), spec.quant)
        _add_matrix(writer, p + "attn_output.weight", rand(spec.n_embd, spec.n_embd), spec.quant)
        writer.add_tensor(p + "ffn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        _add_matrix(writer, p + "ffn_gate.weight", rand(spec.n_ff, spec.n_embd), spec.quant)
        _add_matrix(writer, p + "ffn_up.weight", rand(spec.n_ff, spec.n_embd), spec.quant)
        _add_matrix(writer, p + "ffn_down.weight", rand(spec.n_embd, spec.n_ff), spec.quant)
    _finish(writer, tmp, Path(path))


def mmproj_writer(path: str | Path, spec: VisionSpec) -> tuple[Any, Path]:
    """A GGUF writer for a vision projector, with the keys every projector has written from ``spec``.

    Returns ``(writer, part_path)``; add the image statistics, the activation, the projector's own
    keys and the tensors, then :func:`_finish` it.
    """
    import gguf

    tmp = Path(str(path) + ".part")
    writer = gguf.GGUFWriter(str(tmp), "clip")
    writer.add_name(f"vlmkit synthetic {spec.projector} projector")
    writer.add_file_type(1 if spec.quant == "F16" else 0)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", spec.projector)
    writer.add_uint32("clip.vision.image_size", spec.image_size)
    writer.add_uint32("clip.vision.patch_size", spec.patch_size)
    writer.add_uint32("clip.vision.embedding_length", spec.n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", spec.n_ff)
    writer.add_uint32("clip.vision.block_count", spec.n_layer)
    writer.add_uint32("clip.vision.projection_dim", spec.projection_dim)
    writer.add_uint32("clip.vision.attention.head_count", spec.n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    return writer, tmp


def write_mmproj(path: str | Path, spec: VisionSpec, *, seed: int = 0) -> None:
    """Write a CLIP/SigLIP-style vision encoder with an "mlp" or "idefics3" projector."""
    rng = np.random.default_rng(seed)
    e, ff, ps = spec.n_embd, spec.n_ff, spec.patch_size

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    writer, tmp = mmproj_writer(path, spec)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)
    if spec.projector == "idefics3":
        writer.add_uint32("clip.vision.projector.scale_factor", spec.scale_factor)
        if spec.preproc_image_size:
            writer.add_uint32("clip.vision.preproc_image_size", spec.preproc_image_size)

    n_patches = (spec.image_size // ps) ** 2
    n_pos = n_patches + (1 if spec.class_embedding else 0)
    writer.add_tensor("v.patch_embd.weight", rand(e, 3, ps, ps).astype(np.float16))
    writer.add_tensor("v.patch_embd.bias", np.zeros(e, dtype=np.float32))
    writer.add_tensor("v.position_embd.weight", rand(n_pos, e).astype(np.float32))
    if spec.class_embedding:
        writer.add_tensor("v.class_embd", rand(e))
    for i in range(spec.n_layer):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            _add_matrix(writer, p + name + ".weight", rand(e, e), spec.quant)
            writer.add_tensor(p + name + ".bias", np.zeros(e, dtype=np.float32))
        for ln in ("ln1", "ln2"):
            writer.add_tensor(p + ln + ".weight", np.ones(e, dtype=np.float32))
            writer.add_tensor(p + ln + ".bias", np.zeros(e, dtype=np.float32))
        _add_matrix(writer, p + "ffn_up.weight", rand(ff, e), spec.quant)
        writer.add_tensor(p + "ffn_up.bias", np.zeros(ff, dtype=np.float32))
        _add_matrix(writer, p + "ffn_down.weight", rand(e, ff), spec.quant)
        writer.add_tensor(p + "ffn_down.bias", np.zeros(e, dtype=np.float32))
    writer.add_tensor("v.post_ln.weight", np.ones(e, dtype=np.float32))
    writer.add_tensor("v.post_ln.bias", np.zeros(e, dtype=np.float32))

    if spec.projector == "mlp":
        d = spec.projection_dim
        _add_matrix(writer, "mm.0.weight", rand(d, e), spec.quant)
        writer.add_tensor("mm.0.bias", np.zeros(d, dtype=np.float32))
        _add_matrix(writer, "mm.2.weight", rand(d, d), spec.quant)
        writer.add_tensor("mm.2.bias", np.zeros(d, dtype=np.float32))
    elif spec.projector == "idefics3":
        merged = e * spec.scale_factor * spec.scale_factor
        _add_matrix(writer, "mm.model.fc.weight", rand(spec.projection_dim, merged), spec.quant)
    else:
        raise ValueError(f"unsupported projector {spec.projector!r}")
    _finish(writer, tmp, Path(path))


def _finish(writer: Any, tmp: Path, final: Path) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(final)
