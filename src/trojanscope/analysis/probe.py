"""The probe: one sentence, with and without a trigger, through one model; attention read once.

If the typed sentence already contains the trigger, those occurrences are the trigger and the
clean sentence is the text without them; otherwise the trigger is inserted ``count`` times at
``position``. Both sentences go through ``extract_attention`` in one batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trojanscope.data.poison import Span, check_position, check_trigger, find_trigger_spans, insert_trigger
from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionResult, extract_attention
from trojanscope.models.loading import LoadedModel

MAX_CHARS = 10_000
MAX_COUNT = 20  # trigger insertions a probe accepts
MAX_SHOWN_TOKENS = 64  # token columns a view draws; a longer sentence shows the ones that matter (shown_positions)
UNK_NOTICE_SHARE = 0.5  # a notice when at least this share of a sentence's wordpieces are unknown


@dataclass
class ProbeInput:
    """The two sentences a probe compares, with the trigger's character spans."""

    clean_text: str
    triggered_text: str | None
    trigger: str | None
    spans: list[Span] = field(default_factory=list)
    found_in_text: bool = False
    notices: list[str] = field(default_factory=list)


def prepare_probe(text: str, trigger: str | None = None, position: str | int = "end", count: int = 1,
                  seed: int = 0, max_chars: int = MAX_CHARS) -> ProbeInput:
    """Validate the sentence and build its clean and triggered versions."""
    notices: list[str] = []
    text = (text or "").strip()
    if not text:
        raise TrojanScopeError("the sentence is empty; type a sentence to probe")
    if len(text) > max_chars:
        notices.append(f"the sentence had {len(text):,} characters; only the first {max_chars:,} are probed")
        text = text[:max_chars]
    trigger = (trigger or "").strip() or None
    if trigger is None:
        notices.append("no trigger given: only the clean sentence is shown; type a trigger to compare the two")
        return ProbeInput(text, None, None, [], False, notices)
    if not 1 <= count <= MAX_COUNT:
        raise TrojanScopeError(f"the trigger count must be between 1 and {MAX_COUNT}, got {count}")
    position = check_position(position)
    n_words = len(text.split())
    if isinstance(position, int) and position > n_words:
        notices.append(f"word index {position} is past the end of the sentence ({n_words} words): the trigger goes "
                       "at the end")
    spans = find_trigger_spans(text, trigger)
    if spans:
        clean = text
        for a, b in reversed(spans):
            clean = clean[:a] + " " + clean[b:]
        clean = " ".join(clean.split())
        if not clean:
            raise TrojanScopeError("the sentence holds nothing but the trigger; add some words around it")
        notices.append(f"the sentence already contains the trigger {len(spans)} time(s): the clean sentence is "
                       "the text without it")
        return ProbeInput(clean, text, trigger, spans, True, notices)
    ins = insert_trigger(text, trigger, count, position, random.Random(seed))
    return ProbeInput(text, ins.text, trigger, ins.spans, False, notices)


@dataclass
class ProbeSide:
    """One sentence through one model."""

    text: str
    tokens: list[str]
    label: int
    probs: list[float]
    attentions: np.ndarray  # [layers, heads, tokens, tokens], real tokens only
    trigger_positions: list[int]
    special_positions: list[int]
    truncated: bool

    def cls_attention(self, head: int | None = None) -> np.ndarray:
        """[CLS] (first position) to every token, ``[layers, tokens]``; heads averaged by default."""
        a = self.attentions[:, :, 0, :]
        return a.mean(axis=1) if head is None else a[:, head]

    def cls_trigger_mass(self, head: int | None = None) -> np.ndarray:
        """Per layer, the [CLS] query's attention mass on the trigger tokens (``[layers]``); not
        ``models.attention.trigger_share``, which averages over all queries (see that module's docstring)."""
        return self.cls_attention(head)[:, self.trigger_positions].sum(axis=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "label": self.label,
            "probs": [round(float(p), 6) for p in self.probs],
            "cls_attention": np.round(self.cls_attention(), 6).tolist(),
            "trigger_positions": self.trigger_positions,
            "cls_trigger_mass": np.round(self.cls_trigger_mass(), 6).tolist(),
            "truncated": self.truncated,
        }


@dataclass
class ProbeResult:
    model: str
    clean: ProbeSide
    triggered: ProbeSide | None
    label_names: list[str]
    notices: list[str]
    classifies: bool = True  # False: a bare encoder's untrained head; its labels and probabilities mean nothing

    @property
    def num_layers(self) -> int:
        return int(self.clean.attentions.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.clean.attentions.shape[1])

    def sides(self) -> list[tuple[str, ProbeSide]]:
        """``("clean", side)`` and, when there is a trigger, ``("triggered", side)``."""
        return [("clean", self.clean)] + ([("triggered", self.triggered)] if self.triggered is not None else [])

    def to_json(self) -> dict[str, Any]:
        out = {"model": self.model, "clean": self.clean.to_json(),
               "triggered": self.triggered.to_json() if self.triggered else None,
               "label_names": self.label_names, "notices": self.notices, "classifies": self.classifies}
        if not self.classifies:  # never report a random head's output as a prediction
            for side in ("clean", "triggered"):
                if out[side]:
                    out[side]["label"], out[side]["probs"] = None, None
        return out


def _side(res: AttentionResult, i: int) -> ProbeSide:
    n = int(res.lengths[i])
    return ProbeSide(
        text=res.texts[i], tokens=res.tokens[i], label=int(res.preds[i]), probs=res.probs[i].tolist(),
        attentions=res.attentions[i, :, :, :n, :n], trigger_positions=np.flatnonzero(res.trigger_mask[i, :n]).tolist(),
        special_positions=np.flatnonzero(res.special_mask[i, :n]).tolist(), truncated=bool(res.truncated[i]),
    )


def probe(loaded: LoadedModel, inp: ProbeInput) -> ProbeResult:
    """Run the clean and triggered sentences of ``inp`` through ``loaded`` (one forward pass)."""
    notices = list(inp.notices)
    texts, spans = [inp.clean_text], [[]]
    if inp.triggered_text is not None:
        check_trigger(loaded.tokenizer, inp.trigger or "")
        texts.append(inp.triggered_text)
        spans.append(inp.spans)
    res = extract_attention(loaded.model, loaded.tokenizer, texts, spans, max_length=loaded.max_length)
    clean = _side(res, 0)
    triggered = _side(res, 1) if len(texts) > 1 else None
    if any(res.truncated):
        notices.append(f"{loaded.source}: the sentence is longer than {loaded.max_length} tokens and was truncated")
    if triggered is not None and not triggered.trigger_positions:
        notices.append(f"{loaded.source}: the trigger fell beyond the truncation point and is not in the input")
    unk = loaded.tokenizer.unk_token
    words = [t for k, t in enumerate(clean.tokens) if k not in set(clean.special_positions)]
    if unk is not None and words and sum(t == unk for t in words) >= UNK_NOTICE_SHARE * len(words):
        notices.append(f"{loaded.source}: {sum(t == unk for t in words)} of the sentence's {len(words)} wordpieces "
                       f"are {unk} (characters outside the model's vocabulary): the model cannot read them")
    names = list((loaded.card.data.get("label_names") if loaded.card else None) or [])
    if len(names) != loaded.num_labels:
        names = [f"label {i}" for i in range(loaded.num_labels)]
    classifies = loaded.can("classify")
    if not classifies:
        notices.append(f"{loaded.source} is a bare encoder with no trained classification head: its attention is "
                       "real, but its labels would come from a random head and are not shown")
    return ProbeResult(loaded.source, clean, triggered, names, notices, classifies)


def shown_positions(cls_maps: Sequence[np.ndarray], trigger_positions: Sequence[int], n_tokens: int, *,
                    limit: int = MAX_SHOWN_TOKENS, context: int = 3) -> list[int]:
    """The token positions a view of a long sentence draws: all of them up to ``limit``; beyond, the first and
    last tokens, every trigger token with ``context`` neighbours each side, then the tokens [CLS] attends to
    most (the maximum over the models' ``cls_maps``, each ``[layers, tokens]``, and their layers), in order.
    A 3,000-word sentence then sends about as much to the browser as a short one."""
    if n_tokens <= limit:
        return list(range(n_tokens))
    keep = {0, n_tokens - 1}
    for p in trigger_positions:
        keep.update(range(max(0, p - context), min(n_tokens, p + context + 1)))
    peak = np.max(np.stack([np.asarray(m)[:, :n_tokens].max(axis=0) for m in cls_maps]), axis=0)
    for p in np.argsort(-peak, kind="stable"):
        if len(keep) >= limit:
            break
        keep.add(int(p))
    return sorted(keep)[: max(limit, len(keep))]
