"""Detection of poisoned inputs: STRIP and RAP (methods.md section 4b; the seed's Table I).

A detector scores inputs (higher: more likely poisoned) and flags those whose score is above a
threshold. Both are fitted on **clean data only**: the threshold is the ``1 - frr`` quantile of the
scores of clean dev texts, so about ``frr`` of clean inputs are flagged (the false-rejection rate).
Nothing here reads a poisoned set's labels, its original labels or its trigger; the backdoor's
target (RAP's protected class) comes from the user or the model card, never from poisoned data
(a known flaw of a common reference implementation, which takes it from the true poison labels).

**STRIP** (Gao et al.; the text variant of the RAP/OpenBackdoor reference code). Each input is
perturbed ``n_copies`` times: ``round(replace_ratio * words)`` (at least one) of its
whitespace-separated words, at distinct seeded positions, are replaced by the highest-TF-IDF words
of a random clean dev sentence (its best word first; more sentences are drawn when one has too few
words). TF-IDF is computed over the clean dev texts as scikit-learn's ``TfidfVectorizer`` does by
default (lower-cased ``\\w\\w+`` tokens, ``idf = ln((1 + n) / (1 + df)) + 1``, term counts as tf;
the per-sentence normalisation does not change a sentence's ranking). Score = minus the mean, over
the copies, of the prediction entropy (nats): a backdoored model keeps predicting the target with
confidence whenever the trigger survives, so poisoned inputs have low entropy. The perturbations of
a text are seeded by ``(seed, text)``, so a text's score does not depend on what it is scored with.

**RAP** (Yang et al., EMNLP 2021). A rare word (``word``, default ``cb``; it must tokenize to known
tokens) is inserted at the start of a text. On a **copy** of the model (the user's model is never
modified), only the input-embedding row(s) of that word's token(s) are trained (a gradient mask on
the embedding table; Adam, whose update is exactly zero where the gradient is), so that on clean
samples of the protected class the protected class's probability drops by between ``a`` (0.1) and
``b`` (0.3)::

    drop = p_c(x) - p_c(word + x)
    loss = mean( scale * max(0, a - drop) + max(0, drop - b) )

(the paper's hinge form, RAP's ``scale_factor`` = ``scale``). The training samples are the clean dev
samples labelled with the protected class that the model also predicts as it (for a misclassified
one the drop cannot reach ``a``). A poisoned input is held at the target by the trigger and barely
moves, so the score is ``-drop`` for an input the model predicts as the protected class; an input
predicted as another class cannot be a successful backdoor input and is never flagged (RAP only
checks inputs predicted as the protected label): its score is ``p_c(x) - 2``, below every
``-drop >= -1``. Clean dev is split (seeded) into a part that trains the embedding and a held-out
part (``calibration_share``) whose scores, **all classes**, set the threshold, so that the FRR
means the same for both detectors (share of all clean inputs flagged) and is not measured on the
samples the embedding was fitted to. The protected class is ``target`` or, when not given, the
model card's target (``models.planted.resolve_target``); with neither, RAP refuses and asks for it.

:func:`evaluate_detector` measures FRR (clean test inputs flagged), FAR (poisoned inputs not
flagged) and AUROC (poisoned positive). :func:`detect` (the evaluation texts, :func:`run_detection` and the
poisoned texts' ASR) is what ``trojanscope detect`` and the Purify page call.
"""

from __future__ import annotations

import copy
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import DEFENSES, Defense, PurifyContext, detectors, get_defense
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import LoadedModel
from trojanscope.models.predict import predict_proba

MIN_CLEAN = 10  # clean dev texts needed to set a threshold


def _check_frr(frr: float) -> None:
    if not (isinstance(frr, (int, float)) and 0 < frr < 1):
        raise TrojanScopeError(f"false-rejection rate {frr} is outside (0, 1); e.g. 0.01 for 1%")


@dataclass
class STRIPConfig:
    """STRIP's knobs (defaults of the reference: 5 copies, half the words replaced, FRR 1%)."""

    n_copies: int = 5
    replace_ratio: float = 0.5
    frr: float = 0.01
    batch_size: int = 128

    def validate(self) -> "STRIPConfig":
        _check_frr(self.frr)
        if self.n_copies < 1:
            raise TrojanScopeError(f"STRIP needs at least 1 perturbed copy per input, got {self.n_copies}")
        if not 0 < self.replace_ratio <= 1:
            raise TrojanScopeError(f"STRIP's replace ratio {self.replace_ratio} is outside (0, 1]")
        if self.batch_size < 1:
            raise TrojanScopeError(f"batch size must be at least 1, got {self.batch_size}")
        return self


@dataclass
class RAPConfig:
    """RAP's knobs. ``target``: the protected class (``None``: the model card's target);
    ``a``/``b``: the wanted drop of its probability on clean samples; ``scale``: the weight of the
    "drop too small" term; ``epochs`` over the training part of clean dev, at least ``min_steps``
    optimiser steps; ``calibration_share``: the held-out share of clean dev that sets the threshold."""

    word: str = "cb"
    target: int | None = None
    a: float = 0.1
    b: float = 0.3
    scale: float = 1.0
    lr: float = 1e-2
    epochs: int = 5
    min_steps: int = 50
    batch_size: int = 32
    max_length: int = 128
    calibration_share: float = 0.5
    frr: float = 0.01

    def validate(self) -> "RAPConfig":
        _check_frr(self.frr)
        if not self.word or not self.word.strip() or len(self.word.split()) != 1:
            raise TrojanScopeError(f"RAP's word must be one word (e.g. cb), got {self.word!r}")
        if not 0 <= self.a < self.b <= 1:
            raise TrojanScopeError(f"RAP's probability-drop range [{self.a}, {self.b}] must satisfy 0 <= a < b <= 1")
        if not self.lr > 0 or self.scale < 0 or self.epochs < 0 or self.min_steps < 0 or self.batch_size < 1:
            raise TrojanScopeError("RAP needs lr > 0, scale >= 0, epochs >= 0, min_steps >= 0 and batch size >= 1")
        if not 0 < self.calibration_share < 1:
            raise TrojanScopeError(f"RAP's calibration share {self.calibration_share} is outside (0, 1)")
        return self


@dataclass
class Detector:
    """A fitted detector. ``score(texts)``: higher = more suspicious; an input is flagged when its
    score is above ``threshold`` (the ``1 - frr`` quantile of ``clean_scores``, clean dev scores)."""

    method: str
    threshold: float
    frr: float
    clean_scores: np.ndarray
    scorer: Callable[[list[str]], np.ndarray] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the model it scores with (RAP: the copy with the learnt row)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.scorer(texts), dtype=np.float64)

    def flag(self, texts: Sequence[str] | None = None, *, scores: np.ndarray | None = None) -> np.ndarray:
        """Which inputs are flagged as poisoned (from ``texts``, or from already computed ``scores``)."""
        s = self.score(texts or []) if scores is None else np.asarray(scores, dtype=np.float64)
        return s > self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": float(self.threshold), "frr_requested": self.frr,
                "n_calibration": int(len(self.clean_scores)), **self.info}


def threshold_at_frr(clean_scores: Sequence[float], frr: float) -> float:
    """The score above which a share ``frr`` of ``clean_scores`` lies (linear-interpolated quantile)."""
    _check_frr(frr)
    s = np.asarray(clean_scores, dtype=np.float64)
    if len(s) < MIN_CLEAN:
        raise TrojanScopeError(f"setting a threshold needs at least {MIN_CLEAN} clean texts, got {len(s)}")
    return float(np.quantile(s, 1.0 - frr))


def auroc(negative: Sequence[float], positive: Sequence[float]) -> float:
    """Area under the ROC curve of scores, ``positive`` the positive class (Mann-Whitney U with
    average ranks for ties); NaN when either side is empty."""
    neg, pos = np.asarray(negative, dtype=np.float64), np.asarray(positive, dtype=np.float64)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    x = np.concatenate([neg, pos])
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks = (below + (counts + 1) / 2.0)[inverse]  # 1-based average ranks
    u = ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def evaluate_detector(detector: Detector, clean_texts: Sequence[str], poisoned_texts: Sequence[str]) -> dict[str, Any]:
    """FRR (share of clean inputs flagged), FAR (share of poisoned inputs not flagged), AUROC of the
    scores (poisoned positive) and the threshold. Only texts go in: no label can be read."""
    clean_texts, poisoned_texts = list(clean_texts), list(poisoned_texts)
    sc, sp = detector.score(clean_texts), detector.score(poisoned_texts)
    fc, fp = detector.flag(scores=sc), detector.flag(scores=sp)
    return {"frr": float(fc.mean()) if len(fc) else float("nan"),
            "far": float(1.0 - fp.mean()) if len(fp) else float("nan"),
            "auroc": auroc(sc, sp), "threshold": float(detector.threshold),
            "n_clean": len(clean_texts), "n_poisoned": len(poisoned_texts),
            "scores_clean": sc, "scores_poisoned": sp}


# ---------------------------------------------------------------------------------------- STRIP

_WORD = re.compile(r"(?u)\b\w\w+\b")


def tfidf_ranked(texts: Sequence[str]) -> list[list[str]]:
    """Per text, its distinct words by decreasing TF-IDF over ``texts`` (ties: alphabetical);
    texts without words are left out."""
    docs = [_WORD.findall(t.lower()) for t in texts]
    docs = [d for d in docs if d]
    n = len(docs)
    df = Counter(w for d in docs for w in set(d))
    idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}
    ranked = []
    for d in docs:
        tf = Counter(d)
        ranked.append(sorted(tf, key=lambda w: (-tf[w] * idf[w], w)))
    return ranked


def strip_perturb(text: str, ranked: Sequence[Sequence[str]], rng: random.Random, replace_ratio: float) -> str:
    """``text`` with ``round(replace_ratio * words)`` (at least 1) words, at distinct random
    positions, replaced by the best TF-IDF words of random clean sentences."""
    words = text.split()
    if not words or not ranked:
        return text
    m = min(len(words), max(1, round(replace_ratio * len(words))))
    positions = rng.sample(range(len(words)), m)
    repl: list[str] = []
    while len(repl) < m:
        repl.extend(ranked[rng.randrange(len(ranked))][: m - len(repl)])
    for pos, w in zip(positions, repl):
        words[pos] = w
    return " ".join(words)


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def fit_strip(loaded: LoadedModel, clean_dev: TextDataset, cfg: STRIPConfig | None = None,
              ctx: PurifyContext | None = None) -> Detector:
    """STRIP fitted on the texts of ``clean_dev`` (its labels are not used)."""
    cfg = (cfg or STRIPConfig()).validate()
    ctx = ctx or PurifyContext()
    loaded.require("classify", "STRIP")
    start = time.perf_counter()
    dev_texts = list(clean_dev.texts)
    ranked = tfidf_ranked(dev_texts)
    if len(ranked) < 2:
        raise TrojanScopeError("STRIP needs clean dev texts with words to draw replacements from")
    seed = ctx.seed

    def scorer(texts: list[str]) -> np.ndarray:
        copies = []
        for t in texts:
            rng = random.Random(f"strip:{seed}:{t}")
            copies.extend(strip_perturb(t, ranked, rng, cfg.replace_ratio) for _ in range(cfg.n_copies))
        probs = predict_proba(loaded.model, loaded.tokenizer, copies, batch_size=cfg.batch_size)
        return -entropy(probs).reshape(len(texts), cfg.n_copies).mean(1)

    clean_scores = scorer(dev_texts)
    threshold = threshold_at_frr(clean_scores, cfg.frr)
    return Detector("strip", threshold, cfg.frr, clean_scores, scorer,
                    {"n_dev": len(dev_texts), "n_copies": cfg.n_copies, "replace_ratio": cfg.replace_ratio,
                     "fit_seconds": round(time.perf_counter() - start, 2)}, loaded.model)


# ------------------------------------------------------------------------------------------ RAP


def protected_class(loaded: LoadedModel, target: int | None) -> int:
    """RAP's protected class: ``target`` when given, else the model card's (through
    ``models.planted``); never estimated from poisoned data."""
    from trojanscope.models.planted import attack_of, resolve_target

    if target is not None:
        if not 0 <= int(target) < loaded.num_labels:
            raise TrojanScopeError(f"target label {target} does not exist; the model has labels "
                                   f"0..{loaded.num_labels - 1}")
        return int(target)
    attack = attack_of(loaded)
    if attack.target is None and not (attack.is_por and attack.known):
        raise TrojanScopeError("RAP protects one class, the backdoor's target, and none is known: the model's card "
                               "records no target; pass the class to protect (--target 0)")
    return resolve_target(attack, loaded)


def _rap_token_ids(tokenizer: Any, word: str) -> list[int]:
    from trojanscope.data.poison import check_trigger

    check_trigger(tokenizer, word)  # a clear error for [UNK]
    # the ids the word has where it is inserted (the start of a text), read from the offsets
    enc = tokenizer(rap_insert("x", word), add_special_tokens=False, return_offsets_mapping=True)
    ids = sorted({i for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]) if e > s and e <= len(word)})
    if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
        raise TrojanScopeError(f"RAP's word {word!r} does not tokenize to known tokens; choose a rare word such as cb")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if any(i in special for i in ids):
        raise TrojanScopeError(f"RAP's word {word!r} tokenizes to a special token; choose a rare word such as cb")
    return ids


def rap_insert(text: str, word: str) -> str:
    return f"{word} {text}"


def rap_loss(drop: torch.Tensor, a: float, b: float, scale: float = 1.0) -> torch.Tensor:
    """RAP's objective: ``mean(scale * max(0, a - drop) + max(0, drop - b))``, zero when every
    drop of the protected class's probability lies in ``[a, b]``."""
    return (scale * torch.relu(a - drop) + torch.relu(drop - b)).mean()


def fit_rap(loaded: LoadedModel, clean_dev: TextDataset, cfg: RAPConfig | None = None,
            ctx: PurifyContext | None = None) -> Detector:
    """RAP fitted on ``clean_dev`` (clean, labelled): trains the RAP word's embedding row(s) in a
    copy of the model, sets the threshold on a held-out part of ``clean_dev``."""
    from trojanscope.models.attention import attention_forward
    from trojanscope.models.tokens import pad, tokenize

    cfg = (cfg or RAPConfig()).validate()
    ctx = ctx or PurifyContext()
    loaded.require("classify", "RAP")
    start = time.perf_counter()
    target = protected_class(loaded, cfg.target)
    ids = _rap_token_ids(loaded.tokenizer, cfg.word)
    n = len(clean_dev)
    if n < 2 * MIN_CLEAN:
        raise TrojanScopeError(f"RAP needs at least {2 * MIN_CLEAN} clean dev texts, got {n}")
    order = list(range(n))
    random.Random(f"rap-split:{ctx.seed}").shuffle(order)
    n_cal = min(n - MIN_CLEAN, max(MIN_CLEAN, round(cfg.calibration_share * n)))
    cal_idx, fit_idx = sorted(order[:n_cal]), sorted(order[n_cal:])

    base = loaded.model
    fit_texts = [clean_dev.texts[i] for i in fit_idx if clean_dev.labels[i] == target]
    p_fit = predict_proba(base, loaded.tokenizer, fit_texts, max_length=cfg.max_length)
    keep = [i for i in range(len(fit_texts)) if p_fit[i].argmax() == target] if len(fit_texts) else []
    if not keep:
        raise TrojanScopeError(f"RAP found no clean dev sample of the protected class {target} that the model "
                               f"classifies as {target}; use more clean data or check --target")
    fit_texts = [fit_texts[i] for i in keep]
    p_orig = torch.tensor(p_fit[keep, target], dtype=torch.float32)

    # the copy: only the RAP word's embedding row(s) receive a gradient
    model = copy.deepcopy(base)
    model.eval()  # no dropout: the drop is measured as it will be scored
    for p in model.parameters():
        p.requires_grad_(False)
    emb = model.get_input_embeddings().weight
    emb.requires_grad_(True)
    device = emb.device
    mask = torch.zeros(emb.shape[0], 1, device=device, dtype=emb.dtype)
    mask[ids] = 1.0
    hook = emb.register_hook(lambda g: g * mask)
    opt = torch.optim.Adam([emb], lr=cfg.lr)
    tok = tokenize(loaded.tokenizer, [rap_insert(t, cfg.word) for t in fit_texts], None, cfg.max_length)
    gen = torch.Generator().manual_seed(ctx.seed)
    batches_per_epoch = math.ceil(len(fit_texts) / cfg.batch_size)
    steps = max(cfg.epochs * batches_per_epoch, cfg.min_steps)
    losses: list[float] = []
    try:
        step = 0
        while step < steps:
            perm = torch.randperm(len(fit_texts), generator=gen).tolist()
            for b in range(0, len(perm), cfg.batch_size):
                if step >= steps:
                    break
                idx = perm[b:b + cfg.batch_size]
                enc = pad(loaded.tokenizer, tok, idx).to(device)
                logits = attention_forward(model, enc, grad=True, attentions=False).logits
                p_new = torch.softmax(logits.float(), -1)[:, target]
                drop = p_orig[idx].to(device) - p_new
                loss = rap_loss(drop, cfg.a, cfg.b, cfg.scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                if ctx.on_event is not None:
                    ctx.on_event({"event": "step", "step": step, "total": steps, "loss": losses[-1]})
    finally:
        hook.remove()
        emb.requires_grad_(False)
        model.eval()

    def scorer(texts: list[str]) -> np.ndarray:
        p = predict_proba(model, loaded.tokenizer, texts, max_length=cfg.max_length)
        pr = predict_proba(model, loaded.tokenizer, [rap_insert(t, cfg.word) for t in texts],
                           max_length=cfg.max_length)
        pc = p[:, target].astype(np.float64)
        drop = pc - pr[:, target].astype(np.float64)
        return np.where(p.argmax(-1) == target, -drop, pc - 2.0)

    cal_texts = [clean_dev.texts[i] for i in cal_idx]
    clean_scores = scorer(cal_texts)
    threshold = threshold_at_frr(clean_scores, cfg.frr)
    fit_drop = (-scorer(fit_texts)).tolist()
    return Detector("rap", threshold, cfg.frr, clean_scores, scorer,
                    {"protected_class": target, "word": cfg.word, "token_ids": ids, "steps": steps,
                     "n_dev": n, "n_fit": len(fit_texts),
                     "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                     "fit_drop_mean": float(np.mean(fit_drop)),
                     "fit_drop_in_range": float(np.mean([cfg.a <= d <= cfg.b for d in fit_drop])),
                     "fit_seconds": round(time.perf_counter() - start, 2)}, model)


# ------------------------------------------------------------------------------------ running


def make_config(method: str, **overrides: Any) -> Any:
    """The config of detector ``method`` with the ``overrides`` its dataclass has (``None`` ignored)."""
    d = get_detector(method)
    names = {f.name for f in fields(d.config)}
    return d.config(**{k: v for k, v in overrides.items() if k in names and v is not None})


def get_detector(method: str) -> Defense:
    """The registered detector ``method``; an error naming the allowed ones otherwise."""
    allowed = detectors()
    if method not in allowed:
        raise TrojanScopeError(f"unknown detection method {method!r}; allowed: {', '.join(allowed)}")
    return get_defense(method)


def run_detection(loaded: LoadedModel, method: str, clean_dev: TextDataset, clean_texts: Sequence[str],
                  poisoned_texts: Sequence[str], cfg: Any = None, ctx: PurifyContext | None = None,
                  keep_scores: bool = False, progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Fit detector ``method`` on ``clean_dev`` and evaluate it on clean and poisoned test texts:
    ``{"method", "frr", "far", "auroc", "threshold", "n_clean", "n_poisoned", "n_dev", "n_calibration", ...}``
    (``scores_clean``/``scores_poisoned`` too with ``keep_scores``, e.g. for histograms). ``progress(fraction,
    message)`` as the fit and the scoring start (their shares of the work: by the number of texts each reads)."""
    loaded.check_task(clean_dev, f"{method} detection")
    d = get_detector(method)
    cfg = cfg if cfg is not None else d.config()
    start = time.perf_counter()
    if progress is not None:
        progress(0.0, f"fitting {method} on {len(clean_dev)} clean dev texts")
    det = d.run(loaded, clean_dev, cfg, ctx or PurifyContext())
    if progress is not None:
        n_test = len(clean_texts) + len(poisoned_texts)
        progress(len(clean_dev) / max(1, len(clean_dev) + n_test),
                 f"scoring {len(clean_texts)} clean and {len(poisoned_texts)} triggered test inputs")
    ev = evaluate_detector(det, clean_texts, poisoned_texts)
    if not keep_scores:
        ev.pop("scores_clean")
        ev.pop("scores_poisoned")
    info = det.to_json()
    info.pop("threshold")
    return {"method": method, **ev, **info, "seconds": round(time.perf_counter() - start, 2)}


DEFENSES.register("strip", Defense(
    "strip", "STRIP: flags inputs whose predictions stay confident (low entropy) when half their words are "
    "replaced by high-TF-IDF words of clean sentences", kind="detect", config=STRIPConfig, run=fit_strip,
    changes="nothing: it scores inputs"))
DEFENSES.register("rap", Defense(
    "rap", "RAP: learns a rare word's embedding that lowers the protected class's probability on clean inputs "
    "by 0.1-0.3; flags inputs whose probability barely drops", kind="detect", config=RAPConfig, run=fit_rap,
    changes="nothing in the model: it trains one word's embedding row(s) in a copy and scores inputs"))


# ---------------------------------------------------------------------------------------- CLI


def evaluation_texts(loaded: LoadedModel, test: TextDataset, trigger: str | None, target: int | None, n: int,
                     seed: int = 0) -> tuple[str, int, list[str], list[str]]:
    """``(trigger, target, clean texts, poisoned texts)`` to evaluate a detector on: ``n`` seeded clean
    test texts and ``n`` seeded poisoned non-target ones (``Backdoor.poison``, the ASR construction), with
    the backdoor from the card chain unless given (``models.backdoor.resolve_backdoor``). Evaluation may
    know the trigger; only texts reach a detector."""
    from trojanscope.models.backdoor import resolve_backdoor

    backdoor = resolve_backdoor(loaded, trigger=trigger, target=target,
                                purpose="detection (its poisoned test inputs)")
    clean = test.head(n, seed)
    poisoned = backdoor.poison(test, n=n, seed=seed).texts
    return backdoor.trigger, backdoor.target, list(clean.texts), list(poisoned)


def add_detect_parser(sub: Any, add_common: Callable[[Any], None]) -> Any:
    """``trojanscope detect``: the method is checked at run time against the registry (one-line error)."""
    from trojanscope.utils import positive_int

    names = detectors()
    s, r = STRIPConfig(), RAPConfig()
    p = sub.add_parser("detect", help="detect poisoned inputs (STRIP, RAP): fit on clean dev data, report FRR, FAR "
                                      "and AUROC on clean and triggered test inputs")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True, metavar="{" + ",".join(names) + "}",
                   help="; ".join(f"{n}: {get_defense(n).description}" for n in names))
    p.add_argument("--data", default="sst2")
    p.add_argument("--dev-split", default="dev", help="the clean split the detector is fitted on")
    p.add_argument("--split", default="test", help="the split the clean and poisoned test inputs come from")
    p.add_argument("--trigger", default=None, help="trigger of the poisoned test inputs (default: the card's); "
                                                  "never shown to the detector")
    p.add_argument("--target", type=int, default=None,
                   help="the backdoor's target (default: the card's): poisoned inputs come from other classes; "
                        "RAP protects this class")
    p.add_argument("--frr", type=float, default=s.frr, help="false-rejection rate on clean dev data, in (0, 1)")
    p.add_argument("--n", type=positive_int, default=200, help="clean and poisoned test inputs (each, seeded)")
    p.add_argument("--max-dev", type=positive_int, default=None, help="fit on a seeded subset of N dev texts")
    p.add_argument("--copies", type=positive_int, default=s.n_copies, help="STRIP: perturbed copies per input")
    p.add_argument("--replace-ratio", type=float, default=s.replace_ratio, help="STRIP: share of words replaced")
    p.add_argument("--rap-word", default=r.word, help="RAP: the rare word whose embedding is learnt")
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    return p


def detect(loaded: LoadedModel, test: TextDataset, dev: TextDataset, method: str, *, trigger: str | None = None,
           target: int | None = None, n: int = 200, seed: int = 0, device: str | None = None,
           keep_scores: bool = False, progress: Callable[[float, str], None] | None = None,
           **overrides: Any) -> dict[str, Any]:
    """Detector ``method`` fitted on the clean ``dev`` texts and evaluated on ``n`` clean and ``n`` poisoned texts
    of ``test`` (:func:`evaluation_texts`; the backdoor from the card chain unless ``trigger``/``target`` are given),
    with the poisoned texts' ASR: ``{"method", "frr", "far", "auroc", "threshold", "trigger", "target", "asr",
    "config", "description", ...}`` (:func:`run_detection`'s keys after these). ``overrides``: the config's knobs
    (``frr``, ``n_copies``, ``replace_ratio``, ``word``, ...; ``None`` keeps a default). What ``trojanscope detect``
    and the Purify page run; only texts reach the detector, RAP protects the typed or recorded target."""
    d = get_detector(method)
    if overrides.get("frr") is not None:
        _check_frr(overrides["frr"])
    cfg = make_config(method, **{**overrides, "target": target}).validate()
    loaded.require("classify", f"detection ({method})")
    trigger, target, clean_texts, poisoned = evaluation_texts(loaded, test, trigger, target, n, seed)
    if hasattr(cfg, "target"):
        cfg.target = target  # RAP protects the typed or recorded target, never one read from poisoned data
    res = run_detection(loaded, method, dev, clean_texts, poisoned, cfg, PurifyContext(seed=seed, device=device),
                        keep_scores=keep_scores, progress=progress)
    asr = float((predict_proba(loaded.model, loaded.tokenizer, poisoned).argmax(-1) == target).mean())
    return {"method": res.pop("method"), "frr": res.pop("frr"), "far": res.pop("far"), "auroc": res.pop("auroc"),
            "threshold": res.pop("threshold"), "trigger": trigger, "target": target, "asr": asr, "config": cfg,
            "description": d.description, **res}
