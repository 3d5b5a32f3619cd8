"""A sampler, first in a grammar's chain, that keeps what the grammar reads equal to the reply's text.

llama.cpp's grammar matches each token's bytes as it reads them, and two readings differ from the
text vlmkit returns, so a reply the grammar accepted as JSON could still fail to parse:

- ill-formed UTF-8: llama.cpp decodes a sequence checking only its continuation bytes, so an
  overlong form (``C0 A2``, ``E0 80 A2`` and ``F0 80 80 A2`` all read as ``"``), a surrogate
  (``ED A0 80``) or a code point past U+10FFFF passes as one character the grammar allows, where
  every strict decoder (the reply's, a JSON parser's) reads something else: a string the grammar
  saw closed is still open. A model with byte tokens (the random test model does it) can emit them.
- control tokens (``<|im_start|>``): the grammar matches their names as text, the reply leaves
  them out, so a string's length (``minLength``) would no longer be what the grammar counted.

This sampler takes those tokens out before the grammar looks: a token that holds a byte sequence
never found in well-formed UTF-8, a control token other than end-of-generation, and, after a token
that ends on a lead byte whose second byte is narrowed (``E0``, ``ED``, ``F0``, ``F4``), a token
that does not start with an allowed one. Well-formed text is never narrowed.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_ILL_FORMED = re.compile(rb"[\xC0\xC1\xF5-\xFF]|\xE0[\x80-\x9F]|\xED[\xA0-\xBF]|\xF0[\x80-\x8F]|\xF4[\x90-\xBF]")
"""Byte sequences no well-formed UTF-8 holds: overlong forms, surrogates, and past U+10FFFF."""

_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
"""Lead bytes whose next byte is narrower than any continuation byte, and the range it must be in."""

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
"""llama.cpp's ``llama_token_data``."""


@dataclass(frozen=True)
class TokenTable:
    """What the guard needs to know of a vocabulary, indexed by token id (built once per model)."""

    banned: np.ndarray[Any, np.dtype[np.bool_]]
    """Never sampled under a grammar."""
    lead: np.ndarray[Any, np.dtype[np.int16]]
    """The token's last byte when it is one of the narrowed lead bytes, else -1."""
    empty: np.ndarray[Any, np.dtype[np.bool_]]
    """The token adds no bytes to the reply (end-of-generation)."""
    after: dict[int, np.ndarray[Any, np.dtype[np.bool_]]]
    """Per narrowed lead byte: the tokens that may follow it."""

    @classmethod
    def build(cls, pieces: Sequence[bytes], eog: Sequence[bool]) -> TokenTable:
        """``pieces``: each token's bytes in the reply (a control token's are none); ``eog``: whether
        it ends generation."""
        n = len(pieces)
        banned = np.zeros(n, dtype=np.bool_)
        lead = np.full(n, -1, dtype=np.int16)
        first = np.full(n, -1, dtype=np.int16)
        for token, (piece, ends) in enumerate(zip(pieces, eog, strict=True)):
            if ends:
                continue
            if not piece or _ILL_FORMED.search(piece):
                banned[token] = True
                continue
            first[token] = piece[0]
            if piece[-1] in _SECOND_BYTE:
                lead[token] = piece[-1]
        empty = first < 0
        after = {b: empty | ((first >= lo) & (first <= hi)) for b, (lo, hi) in _SECOND_BYTE.items()}
        return cls(banned, lead, empty, after)


class GrammarGuard:
    """One prediction's guard: a llama.cpp sampler (``.sampler``) and the lead byte it waits on.

    The chain it is added to owns and frees the llama.cpp side; keep this object alive until then.
    """

    def __init__(self, L: Any, table: TokenTable) -> None:
        self.table = table
        self.pending = -1  # the narrowed lead byte the reply ends on, if any
        self._apply = L.llama_sampler_i_apply(self._on_apply)
        self._accept = L.llama_sampler_i_accept(self._on_accept)
        self._iface = L.llama_sampler_i()
        self._iface.apply = self._apply
        self._iface.accept = self._accept
        self.sampler = L.llama_sampler_init(ctypes.pointer(self._iface), None)

    def _on_apply(self, _sampler: Any, cur_p: Any) -> None:
        data = cur_p.contents
        n = int(data.size)
        if n == 0:
            return
        raw = (ctypes.c_char * (n * _TOKEN_DATA.itemsize)).from_address(ctypes.addressof(data.data.contents))
        candidates = np.frombuffer(memoryview(raw), dtype=_TOKEN_DATA)
        ids = candidates["id"]
        out = self.table.banned[ids]
        if self.pending >= 0:
            out |= ~self.table.after[self.pending][ids]
        candidates["logit"][out] = -np.inf

    def _on_accept(self, _sampler: Any, token: int) -> None:
        if not self.table.empty[token]:
            self.pending = int(self.table.lead[token])
