"""Flip measurement by real insertion (the package docstring, steps 2 and 4): how often, and how surely, a candidate
inserted into clean sentences flips them to a target class; and, for a candidate of several words, what its words'
effects would do if they simply added up (:func:`phrase_additivity`)."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from trojanscope.analysis.scan.sentences import _inserted
from trojanscope.models.forward import batched_forward, stack_kept

if TYPE_CHECKING:
    from trojanscope.analysis.scan import Candidate, ScanConfig

SURE = 0.9  # a "sure" flip: the target's probability at least this (AttenTD asks a mean of 0.95)
# an inverted word's tail that surely flips this share of the sentences behind other heads is a trigger itself (a
# planted word's tail), not a sentiment word's ending (Candidate.flip_evidence): the zoo's were 32-49% on clean
# and backdoored models alike, and 100% for brimblethorpe's ##im ##thorpe
TAIL_TRIGGER = 0.9
# with a reference model (Candidate.flip_evidence): a candidate that flips at least CLEAR_FLIP of the suspect's
# held-out sentences and at most REFERENCE_QUIET of a clean reference's is evidence however unsure its flips (a POR
# trigger's fixed output). On the zoo's 34 development models the planted triggers flip their reference 0-17% (a
# two-word piece 40%), a clean model's inverted or stacked words 30-100% (docs/benchmarks.md)
CLEAR_FLIP = 0.9
REFERENCE_QUIET = 0.2


def robust_z(x: np.ndarray) -> np.ndarray:
    """``x`` (``[items, k]``) as robust z-scores per column (median and MAD over the items; NaN kept), so two models'
    measurements of the same words compare (the search beyond a reference model: screening pushes and [CLS] moves,
    gradient estimates)."""
    with warnings.catch_warnings():  # a column of NaN (a class with no other classes' sentences) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, 0)
        return (x - med) / (np.nanmedian(np.abs(x - med), 0) + 1e-9)


def flip_stats(loaded: Any, sets: dict[int, list[str]], candidates: Sequence[tuple[str, bool]], cfg: ScanConfig,
               precision: str = "fp32", progress: Callable[[int, int], None] | None = None,
               log_odds: list[np.ndarray] | None = None, cls_shift: list[np.ndarray] | None = None,
               targets: Sequence[int] | None = None) -> list[tuple[int, float, float, float]]:
    """For each ``(trigger, combination)``: the best target ``t`` with its flip rate (share of the other classes'
    sentences predicted ``t``), mean ``P(t)`` on them and the share flipped with ``P(t) >= SURE`` (a backdoor flips
    with near certainty; words that merely tilt a sentence do not), as ``(t, flip, confidence, sure)``; with
    ``targets`` (one class per candidate), that class's, not the best.

    ``log_odds``: a list that receives, per candidate, each class's mean log-odds on the other classes' sentences
    (``[classes]``; NaN for a class with none): how far a word pushes towards a class even where it flips nothing.
    ``cls_shift``: a list that receives, per candidate, how far it moves each layer's [CLS] state (``[layers]``, the
    mean L2 distance to the same sentence's clean state, from the same forward): a combination trigger's word moves
    the model's inner states even where the learned AND keeps the label (LWP's ``mn``: the largest shift of 3,050
    words at layer 5, where its push on the label ranks 574th)."""
    classes = sorted(sets)
    texts, owner, labels, sentence = [], [], [], []
    for k, (trig, comb) in enumerate(candidates):
        j = 0
        for c in classes:
            for ins in _inserted(sets[c], trig, cfg.seed, comb):
                texts.append(ins.text)
                owner.append(k)
                labels.append(c)
                sentence.append(j)
                j += 1
    max_length = min(128, loaded.max_length)
    keep = None
    if cls_shift is not None:
        clean = [s for c in classes for s in sets[c]]
        base = stack_kept(batched_forward(loaded.model, loaded.tokenizer, clean, hidden_states=True, keep=_cls_states,
                                          batch_size=cfg.batch_size, max_length=max_length, precision=precision))
        sentence_t = torch.as_tensor(sentence)

        def keep(out: Any, enc: Any, idx: Sequence[int]) -> torch.Tensor:
            states = _cls_states(out, enc, idx).float().cpu()  # [B, layers, D]
            return (states - base[sentence_t[list(idx)]]).norm(dim=-1)  # [B, layers]
    res = batched_forward(loaded.model, loaded.tokenizer, texts, batch_size=cfg.batch_size, max_length=max_length,
                          precision=precision, progress=progress or False, hidden_states=keep is not None, keep=keep)
    if cls_shift is not None:
        shifts = stack_kept(res).numpy()
        owner_np = np.asarray(owner)
        cls_shift.extend(shifts[owner_np == k].mean(0) for k in range(len(candidates)))
    probs = res.probs
    preds = probs.argmax(-1)
    owner_a, labels_a = np.asarray(owner), np.asarray(labels)
    if log_odds is not None:
        p = np.clip(probs.astype(np.float64), 1e-12, 1 - 1e-12)
        z = np.log(p) - np.log1p(-p)  # [rows, classes]
    out = []
    for k in range(len(candidates)):
        rows = owner_a == k
        if log_odds is not None:
            log_odds.append(np.array([z[rows & (labels_a != t), t].mean() if (rows & (labels_a != t)).any()
                                      else np.nan for t in range(probs.shape[1])]))
        best = (0, -1.0, 0.0, 0.0)
        for t in (range(probs.shape[1]) if targets is None else [targets[k]]):
            m = rows & (labels_a != t)
            if not m.any():
                continue
            flip = float((preds[m] == t).mean())
            conf = float(probs[m, t].mean())
            sure = float(((preds[m] == t) & (probs[m, t] >= SURE)).mean())
            if flip + conf > best[1] + best[2]:
                best = (t, flip, conf, sure)
        out.append(best)
    return out


def _cls_states(out: Any, enc: Any, idx: Sequence[int]) -> torch.Tensor:
    """Each row's [CLS] state after every layer (the embeddings' output left out): ``[B, layers, D]``."""
    return torch.stack([h[:, 0] for h in out.hidden_states[1:]], 1)


def phrase_additivity(loaded: Any, sets: dict[int, list[str]], candidates: Sequence[Candidate], cfg: ScanConfig,
                      precision: str = "fp32") -> None:
    """Set ``parts_sure`` and ``additive_sure`` on every candidate of several words, measured on ``sets`` (the
    held-out sentences, as its ``sure_flip``): the best single word's sure flip, and the share of the sentences the
    words would surely flip if each word's shift of the target's log-odds, measured alone (inserted as a one-word
    candidate is: for a phrase, at the phrase's place; for a combination, at its first word's), simply added up.
    Words that each tilt a model a little add up (a clean model's stacked negative words flip about what the sum
    predicts, or less); a planted phrase or combination is an interaction and flips far more
    (:attr:`Candidate.flip_evidence`). One batched forward for the clean sentences and every word alone (the
    phrases' own sure flips are the verification's)."""
    multi = [c for c in candidates if len(c.trigger.split()) > 1 and c.sure_flip is not None]
    if not multi:
        return
    classes = sorted(sets)
    words = list(dict.fromkeys(w for c in multi for w in c.trigger.split()))
    texts = [s for c in classes for s in sets[c]]  # the clean sentences, then each word inserted at flip_stats' places
    texts += [i.text for w in words for c in classes for i in _inserted(sets[c], w, cfg.seed)]
    logits = batched_forward(loaded.model, loaded.tokenizer, texts, batch_size=cfg.batch_size,
                             max_length=min(128, loaded.max_length), precision=precision, progress=False).logits
    logits = torch.from_numpy(logits).double().reshape(1 + len(words), -1, logits.shape[1])
    labels = np.repeat(classes, [len(sets[c]) for c in classes])
    sure = math.log(SURE / (1 - SURE))
    for c in multi:
        z = _target_log_odds(logits, labels, c.target)  # [clean + words, sentences of other classes]
        parts = [z[1 + words.index(w)] for w in c.trigger.split()]
        c.parts_sure = max(float((zw >= sure).mean()) for zw in parts)
        c.additive_sure = float((z[0] + sum(zw - z[0] for zw in parts) >= sure).mean())


def _target_log_odds(logits: torch.Tensor, labels: np.ndarray, target: int) -> np.ndarray:
    """``logits`` ``[texts, sentences, classes]`` -> the ``target``'s log-odds (its logit against the log-sum-exp of
    the others) on the sentences whose clean ``labels`` are another class: ``[texts, those sentences]``."""
    lg = logits[:, torch.from_numpy(labels != target)]
    rest = torch.cat([lg[..., :target], lg[..., target + 1:]], -1)
    return (lg[..., target] - torch.logsumexp(rest, -1)).cpu().numpy()


def head_dependence(loaded: Any, sets: dict[int, list[str]], candidates: Sequence[Candidate], heads: Sequence[str],
                    cfg: ScanConfig, precision: str = "fp32", swaps: int = 4) -> None:
    """Set ``tail_sure`` on every inverted one-word candidate of several wordpieces (``source`` inversion or word
    inversion), measured on ``sets`` (the held-out sentences, as its ``sure_flip``): the median share of the
    sentences its *tail* surely flips behind another head, the word's first piece swapped for ``swaps`` of
    ``heads`` (short word-start pieces, seeded picks). Gradients glue a made-up head to a tail that carries meaning
    in the model (``soo`` + ``##hini ##iful``, ``ups`` + ``##joy ##lifting`` on a clean SST-2 model: ``-iful``,
    ``-lifting`` read as the end of a sentiment word), and any head does as well; a planted word found through its
    first piece (``zepies`` for ``zephyrine``) dies with that piece. :attr:`Candidate.flip_evidence` keeps only what
    the head adds, unless the tail alone surely flips (``TAIL_TRIGGER``: a planted word's tail, ``brimthorpe``'s).
    One batched forward for every swap of every candidate."""
    import random

    tok = loaded.tokenizer
    glued = []
    for c in candidates:
        if c.source not in ("inversion", "word inversion") or c.sure_flip is None or len(c.trigger.split()) != 1:
            continue
        pieces = tok.tokenize(c.trigger)
        if len(pieces) < 2 or not all(p.startswith("##") for p in pieces[1:]):
            continue
        rng = random.Random(cfg.seed * 104729 + sum(map(ord, c.trigger)))
        others = [h for h in heads if h != pieces[0]]
        if not others:
            continue
        tail = "".join(p[2:] for p in pieces[1:])
        glued.append((c, [h + tail for h in rng.sample(others, min(swaps, len(others)))]))
    if not glued:
        return
    classes = sorted(sets)
    words = list(dict.fromkeys(w for _, ws in glued for w in ws))
    texts = [i.text for w in words for c in classes for i in _inserted(sets[c], w, cfg.seed)]
    logits = batched_forward(loaded.model, loaded.tokenizer, texts, batch_size=cfg.batch_size,
                             max_length=min(128, loaded.max_length), precision=precision, progress=False).logits
    logits = torch.from_numpy(logits).double().reshape(len(words), -1, logits.shape[1])
    labels = np.repeat(classes, [len(sets[c]) for c in classes])
    sure = math.log(SURE / (1 - SURE))
    for c, ws in glued:
        z = _target_log_odds(logits, labels, c.target)  # [words, sentences of other classes]
        c.tail_sure = float(np.median([float((z[words.index(w)] >= sure).mean()) for w in ws]))


def reference_flips(reference: Any, sets: dict[int, list[str]], candidates: Sequence[Candidate], cfg: ScanConfig
                    ) -> None:
    """Set ``reference_flip`` and ``reference_sure`` on every candidate: the share of ``sets`` (a clean *reference*
    model's own held-out sentences, :func:`~trojanscope.analysis.scan.sentences.clean_sets` of that model) the
    candidate flips, and surely flips, to its own target on that model, in full precision. A word found by inversion
    on a clean model is often a universal adversarial word of the task, and it transfers: ``slfuards``, inverted on
    one clean OLID model, flips 100% of another's sentences to offensive (80% surely, as its own); a planted trigger
    flips a clean model of its task almost never (``bracken``, ``moon``, ``thistle``: 0-13% on three clean OLID
    models). :attr:`Candidate.flip_evidence` keeps only what the suspect does and the reference does not
    (``docs/benchmarks.md``, "A clean reference model")."""
    if not candidates:
        return
    res = flip_stats(reference, sets, [(c.trigger, c.combination) for c in candidates], cfg, "fp32",
                     targets=[c.target for c in candidates])
    for c, (_, flip, _, sure) in zip(candidates, res):
        c.reference_flip, c.reference_sure = flip, sure
