"""Tokenize texts and mark which tokens are trigger tokens, special tokens or padding.

Trigger positions are known as character spans (the poisoners record where they inserted the
trigger); a token is a trigger token when its character offsets overlap such a span. This is the
single place where texts become model inputs, for training, evaluation and attention reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from trojanscope.models.arch import ARCHS

Span = tuple[int, int]
CHARS_PER_TOKEN_BUDGET = 32  # a text longer than max_length x this many characters is tokenized from a prefix


@dataclass
class Tokenized:
    """Unpadded token ids per text, with trigger/special flags and truncation notices."""

    input_ids: list[list[int]]
    trigger: list[list[bool]]
    special: list[list[bool]]
    truncated: list[bool]


@dataclass
class Encoded:
    """A padded batch. Masks are ``[batch, seq]``; ``attention_mask`` is 1 on real tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    trigger_mask: torch.Tensor
    special_mask: torch.Tensor
    truncated: list[bool]

    def to(self, device: torch.device | str) -> "Encoded":
        return Encoded(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.trigger_mask.to(device),
            self.special_mask.to(device),
            self.truncated,
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def rows(self, keep: torch.Tensor) -> "Encoded":
        """The rows where ``keep`` (bool ``[batch]``) is true."""
        flags = keep.tolist()
        return Encoded(self.input_ids[keep], self.attention_mask[keep], self.trigger_mask[keep],
                       self.special_mask[keep], [t for t, k in zip(self.truncated, flags) if k])


def tokenize(
    tokenizer: Any,
    texts: Sequence[str],
    trigger_spans: Sequence[Sequence[Span]] | None = None,
    max_length: int = 512,
) -> Tokenized:
    """Tokenize without padding; truncation to ``max_length`` is recorded per text.

    Only what fits is worked on: a text longer than ``max_length * CHARS_PER_TOKEN_BUDGET``
    characters is tokenized from a prefix of that length, which gives the same kept tokens as the
    whole text whenever the prefix already overflows ``max_length`` with tokens that end before its
    last space (checked; otherwise the whole text is tokenized), and trigger flags are computed for
    the kept tokens only.
    """
    texts = list(texts)
    budget = max(1, max_length) * CHARS_PER_TOKEN_BUDGET
    enc = _encode_raw(tokenizer, [t[:budget] if len(t) > budget else t for t in texts])
    ids_out, trig_out, spec_out, trunc_out = [], [], [], []
    n_special_end = _n_special_at_end(tokenizer)
    keep = max_length - n_special_end
    for i, ids in enumerate(enc["input_ids"]):
        offsets = enc["offset_mapping"][i]
        special_mask = enc["special_tokens_mask"][i]
        if len(texts[i]) > budget and not _prefix_suffices(texts[i][:budget], ids, offsets, max_length, keep):
            whole = _encode_raw(tokenizer, [texts[i]])  # rare: words so long that the prefix cannot tell
            ids, offsets, special_mask = whole["input_ids"][0], whole["offset_mapping"][0], \
                whole["special_tokens_mask"][0]
        truncated = len(ids) > max_length
        rows = (list(range(keep)) + list(range(len(ids) - n_special_end, len(ids)))) if truncated else \
            range(len(ids))
        spans = list(trigger_spans[i]) if trigger_spans is not None and trigger_spans[i] else []
        special = [bool(special_mask[j]) for j in rows]
        trig = []
        for j, is_special in zip(rows, special):
            s, e = offsets[j]
            trig.append((not is_special) and e > s and any(s < b and e > a for a, b in spans))
        ids_out.append([ids[j] for j in rows])
        trig_out.append(trig)
        spec_out.append(special)
        trunc_out.append(truncated)
    return Tokenized(ids_out, trig_out, spec_out, trunc_out)


def _encode_raw(tokenizer: Any, texts: list[str]) -> Any:
    return tokenizer(
        texts,
        truncation=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        add_special_tokens=True,
        split_special_tokens=True,  # typed text is data: "[SEP]" in a sentence or trigger is never a separator
    )


def _prefix_suffices(prefix: str, ids: Sequence[int], offsets: Sequence[Span], max_length: int, keep: int) -> bool:
    """Whether the tokens of ``prefix`` (a cut of a longer text) are, up to position ``keep``, those of the text.

    Tokenizers split words at spaces, so every token ending before the prefix's last run of spaces
    (with a word after it) is the same in the whole text. It suffices when the prefix overflows
    ``max_length`` and the first dropped token (position ``keep``) also ends before that run: then
    the kept tokens are the text's, and the text is truncated too.
    """
    if len(ids) <= max_length or keep < 0:
        return False
    words = prefix.rstrip(" ")
    start = words.rfind(" ")  # the last space with a word after it ...
    if start < 0:
        return False
    while start > 0 and words[start - 1] == " ":  # ... and where its run of spaces starts
        start -= 1
    return offsets[keep][1] <= start


def _n_special_at_end(tokenizer: Any) -> int:
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)["special_tokens_mask"]
    n = 0
    for s in reversed(probe):
        if not s:
            break
        n += 1
    return n


def pad(tokenizer: Any, tok: Tokenized, index: Sequence[int] | None = None) -> Encoded:
    """Pad the chosen rows (all by default) to the longest of them (dynamic padding)."""
    rows = list(range(len(tok.input_ids))) if index is None else list(index)
    width = max(len(tok.input_ids[r]) for r in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    trig = torch.zeros((len(rows), width), dtype=torch.bool)
    spec = torch.ones((len(rows), width), dtype=torch.bool)  # padding counts as special
    for b, r in enumerate(rows):
        n = len(tok.input_ids[r])
        ids[b, :n] = torch.tensor(tok.input_ids[r])
        att[b, :n] = 1
        trig[b, :n] = torch.tensor(tok.trigger[r], dtype=torch.bool)
        spec[b, :n] = torch.tensor(tok.special[r], dtype=torch.bool)
    return Encoded(ids, att, trig, spec, [tok.truncated[r] for r in rows])


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    trigger_spans: Sequence[Sequence[Span]] | None = None,
    max_length: int = 512,
) -> Encoded:
    """Tokenize and pad in one go."""
    return pad(tokenizer, tokenize(tokenizer, texts, trigger_spans, max_length))


def model_max_length_of(model: torch.nn.Module, tokenizer: Any) -> int:
    """The longest input the model accepts, in tokens (position table and tokenizer limit)."""
    limit = int(getattr(tokenizer, "model_max_length", 512) or 512)
    pos = getattr(model.config, "max_position_embeddings", None)
    if pos:
        arch = ARCHS.get(model.config.model_type)  # RoBERTa reserves padding_idx + 1 positions
        offset = arch.position_offset if arch is not None else 0
        limit = min(limit, int(pos) - offset)
    return min(limit, 512)


def length_buckets(lengths: Sequence[int], batch_size: int, rng=None, chunk_batches: int = 50) -> list[list[int]]:
    """Batches of similar length (less padding). With ``rng`` the order is shuffled reproducibly:
    indices are shuffled, sorted by length within chunks of ``chunk_batches`` batches, and the
    batches shuffled; without it, indices are simply sorted by length."""
    idx = list(range(len(lengths)))
    if rng is None:
        idx.sort(key=lambda i: lengths[i])
        return [idx[j : j + batch_size] for j in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    batches: list[list[int]] = []
    chunk = batch_size * chunk_batches
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches
