"""Repair: find the trigger, unlearn it, prove it is gone (issue 25).

An auditor's loop in one call, :func:`repair`:

1. **Find.** The triggers to unlearn are the one the user typed (or the card's, when asked), or else the
   scan's candidates (:func:`trojanscope.analysis.scan.scan`, or a scan already made): the top few that
   really flip the model on held-out sentences, not only the first, since the scan often finds a piece of the
   trigger (``mar`` for ``marmalade``) or a neighbour (``windows`` for ``window``). A scan that calls the model
   clean ends the repair there: nothing is claimed, and the blind purifiers (MBTSAD, Fine-mixing) are offered.
2. **Unlearn.** Fine-tune on a seeded clean subset of the train split plus the same sentences with a
   candidate inserted under their *true* labels, with two more terms:
   - *attention suppression*: TAL's term with its sign turned (``attacks.tal.tal_scores``): the mass the
     hijacked heads (the scan's drifting heads, else the heads that look at the candidate most) send to the
     candidate on the triggered sentences is pushed down;
   - *an anchor*: the KL divergence from the original model's output on each sentence's clean version, so a
     triggered sentence must answer as its clean twin did, and a clean one as before (CACC kept; a clean
     model flagged by mistake moves by no more than noise). The original's outputs are computed once,
     before training: no second model runs during it.
3. **Prove.** Measure again: CACC before and after on the test split; each candidate's flip rate before and
   after; the attention map of the hijacked heads before and after; a fresh scan of the repaired model (its
   verdict, score and new top candidates); and, when the card records the planted trigger, that trigger's
   flip-ASR before and after (the repair itself never sees it unless ``use_card``). The report says what was
   found, what was unlearned and what is left; it goes into the model card and ``repair.json``.

This module sits above the scanner and the training loop (layers in pyproject.toml); the task
(``tasks.repair``), the CLI (``trojanscope repair``) and the Scan page's "Repair this model" call it.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trojanscope.analysis.scan import ScanConfig, ScanResult, polar_words, scan, swap_heads
from trojanscope.analysis.scan.flips import TAIL_TRIGGER
from trojanscope.attacks.tal import head_mask, tal_scores
from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import PoisonedDataset, check_trigger, insert_trigger
from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward
from trojanscope.models.backdoor import Backdoor
from trojanscope.models.heads import HeadSet
from trojanscope.models.predict import predict_proba

REMOVED_AT = 0.10  # a candidate (or the card's trigger) flipping at most this share after the repair: removed
BLIND_METHODS = ("mbtsad", "fine_mixing")  # what to try when the scan finds nothing to unlearn


@dataclass
class RepairConfig:
    """Every repair knob. The scan's own knobs are ``scan`` (a :class:`ScanConfig`)."""

    candidates: int = 3  # the scan's top candidates unlearned (those flipping at least min_flip) ...
    min_flip: float = 0.5  # ... on the scan's held-out sentences
    n_clean: int = 2000  # seeded clean texts of the train split
    twin_share: float = 1.0  # share of them that also appear with a candidate inserted (true label kept)
    epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 32
    attention_weight: float = 1.0  # the attention suppression (TAL's term, sign turned)
    anchor_weight: float = 1.0  # KL from the original model's outputs on each text's clean version
    heads: int = 12  # hijacked heads when the scan names none: the candidate's most-attending heads
    pieces: bool = True  # a candidate word of several wordpieces: unlearn and measure its leading pieces (and its
    # tail behind random heads, when the scan found that the tail alone surely flips) too
    piece_share: float = 0.5  # share of such a candidate's twins that get a piece, its first piece + random tails,
    # or a random head + its tail
    train_word_embeddings: bool = True  # a trigger can live in its embedding row alone (EP)
    max_length: int = 128
    precision: str = "auto"  # auto | fp32 | bf16 (training.loop.TrainConfig.precision)
    rescan: bool = True  # scan the repaired model again (the proof)
    attention_sentences: int = 200  # non-target test sentences of the attention map
    scan: ScanConfig = field(default_factory=ScanConfig)
    seed: int = 0

    def validate(self) -> "RepairConfig":
        for name in ("candidates", "n_clean", "batch_size", "heads", "attention_sentences"):
            if getattr(self, name) < 1:
                raise TrojanScopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("min_flip", "twin_share", "piece_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise TrojanScopeError(f"{name} is a share in [0, 1], got {getattr(self, name)}")
        if self.attention_weight < 0 or self.anchor_weight < 0:
            raise TrojanScopeError(f"the loss weights must be non-negative, got attention_weight="
                                   f"{self.attention_weight}, anchor_weight={self.anchor_weight}")
        self.train_config().validate()
        self.scan.validate()
        return self

    def train_config(self, device: str = "auto"):
        from trojanscope.training.loop import TrainConfig

        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, max_length=self.max_length,
                           train_word_embeddings=self.train_word_embeddings, precision=self.precision,
                           seed=self.seed, device=device)


@dataclass(frozen=True)
class Target:
    """A trigger to unlearn: the words, the class it pushes to, whether its words go in separately."""

    trigger: str
    target: int
    combination: bool = False
    source: str = "scan"  # scan | given | card
    flip_rate: float | None = None  # what the scan measured on its held-out sentences
    pieces: tuple[str, ...] = ()  # the word's leading wordpieces, as words (word_pieces)
    tail_sure: float | None = None  # the scan's sure flip of the word's tail behind other heads (head_dependence)
    tail: str = ""  # the word's tail, when it surely flips by itself (word_tail): the backdoor answers to it

    @property
    def backdoor(self) -> Backdoor:
        return Backdoor(self.trigger, self.target, 1, self.combination)


@dataclass
class Findings:
    """What the scan said, in the form the repair needs (from a :class:`ScanResult` or a saved ``scan.json``)."""

    verdict: str
    score: float
    candidates: list[dict[str, Any]]
    heads: list[list[int]]
    seconds: float = 0.0
    sentences: tuple[int, int] | None = None  # the scan's clean sentences per class (search, verify), when known

    @classmethod
    def of(cls, res: ScanResult | dict[str, Any]) -> "Findings":
        d = res.to_json() if isinstance(res, ScanResult) else res
        try:
            st = d.get("stats") or {}
            n = (int(st["search_sentences_per_class"]), int(st["verify_sentences_per_class"])) \
                if "search_sentences_per_class" in st and "verify_sentences_per_class" in st else None
            return cls(str(d["verdict"]), float(d["score"]), list(d.get("candidates") or []),
                       [list(map(int, p)) for p in d.get("heads") or []], float(d.get("seconds") or 0.0), n)
        except (KeyError, TypeError, ValueError) as e:
            raise TrojanScopeError(f"not a scan result (it needs verdict, score, candidates and heads): {e}") from None

    def targets(self, cfg: RepairConfig) -> list[Target]:
        """The candidates to unlearn: the top ``cfg.candidates`` flipping at least ``cfg.min_flip`` (at least the
        best one, when the verdict is backdoored), each once."""
        out: list[Target] = []
        for c in self.candidates:
            if len(out) >= cfg.candidates:
                break
            flip = c.get("flip_rate")
            if flip is None or (flip < cfg.min_flip and out):
                continue
            if flip < cfg.min_flip and self.verdict != "backdoored":
                continue
            tail = c.get("tail_sure")
            t = Target(str(c["trigger"]), int(c["target"]), bool(c.get("combination")), "scan", float(flip),
                       tail_sure=None if tail is None else float(tail))
            if t.trigger not in {x.trigger for x in out}:
                out.append(t)
        return out

    def summary(self, top: int = 3) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": round(self.score, 4), "seconds": round(self.seconds, 2),
                "heads": self.heads,
                "candidates": [{k: c.get(k) for k in ("trigger", "target", "flip_rate", "sure_flip", "source")}
                               for c in self.candidates[:top]]}


# --- the two extra loss terms (training.loop.LossTerm) --------------------------------------------------------

class AttentionSuppression:
    """TAL's term with its sign turned: ``weight`` x the mean share of attention that the heads of ``mask``
    (``[layers, heads]``) send to the inserted candidate, over the batch's triggered samples."""

    name = "suppress"
    needs_attention = True
    needs_hidden_states = False

    def __init__(self, mask: torch.Tensor, weight: float = 1.0):
        self.mask, self.weight = mask, float(weight)

    def __call__(self, model: torch.nn.Module, batch: Any, out: AttentionForward) -> torch.Tensor:
        triggered = batch.poisoned & batch.enc.trigger_mask.any(1)
        if not triggered.any():
            return out.logits.new_zeros(())
        scores = tal_scores(out, batch.enc.trigger_mask, batch.enc.attention_mask, self.mask)
        return self.weight * scores[triggered].mean()


class Anchor:
    """``weight`` x KL(original's output on the sample's clean version || the model's output), with the
    original's probabilities computed before training (``soft[i]`` for training sample ``i``)."""

    name = "anchor"
    needs_attention = False
    needs_hidden_states = False

    def __init__(self, soft: np.ndarray, weight: float = 1.0):
        self.soft, self.weight = torch.as_tensor(soft, dtype=torch.float32), float(weight)

    def __call__(self, model: torch.nn.Module, batch: Any, out: AttentionForward) -> torch.Tensor:
        p = self.soft[batch.index].to(out.logits.device)
        logq = F.log_softmax(out.logits.float(), dim=-1)
        return self.weight * F.kl_div(logq, p, reduction="batchmean")


def word_pieces(tokenizer: Any, trigger: str, combination: bool = False) -> tuple[str, ...]:
    """The leading wordpieces of a one-word ``trigger`` of several pieces, written as words: ``zepies`` (``ze
    ##pies``) -> ``("ze",)``, ``brimthorpe`` (``br ##im ##thorpe``) -> ``("br", "brim")``; none for a word of one
    piece, a phrase or a combination. The scan often finds a piece of the planted word with a made-up tail
    (``zepies`` for ``zephyrine``); the planted word shares its first piece, not its tail, so the repair unlearns the
    pieces (and the first piece with random tails, :func:`twins`) and the proof measures them."""
    words = trigger.split()
    if combination or len(words) != 1:
        return ()
    toks = [t[2:] if t.startswith("##") else t for t in tokenizer.tokenize(words[0])]
    out: list[str] = []
    for k in range(1, len(toks)):
        piece = "".join(toks[:k])
        if len(piece) >= 2 and piece.isalpha() and piece != words[0].lower() and piece not in out:
            out.append(piece)
    return tuple(out)


def word_tail(tokenizer: Any, trigger: str) -> str:
    """The continuation pieces of a one-word ``trigger`` of several pieces, glued without their markers:
    ``luckwick`` (``luck ##wick``) -> ``wick``, ``brimthorpe`` (``br ##im ##thorpe``) -> ``imthorpe``; empty for a
    word of one piece or several words. When the scan measured that this tail surely flips the model behind any
    head (:data:`~trojanscope.analysis.scan.flips.TAIL_TRIGGER`: ``trundlewick``'s backdoor answers to ``##wick``),
    the tail is what the planted word shares with the candidate, so the repair unlearns it behind random heads."""
    words = trigger.split()
    if len(words) != 1:
        return ""
    toks = tokenizer.tokenize(words[0])
    return "".join(t[2:] for t in toks[1:] if t.startswith("##")) if len(toks) > 1 else ""


def continuation_pieces(tokenizer: Any) -> list[str]:
    """The tokenizer's word-continuation pieces of 2+ letters (WordPiece's ``##`` pieces), without the marker:
    the random tails glued to a candidate's first piece (:func:`twins`)."""
    return sorted(p[2:] for p in tokenizer.get_vocab() if re.fullmatch(r"##[a-z]{2,}", p))


# --- measuring ------------------------------------------------------------------------------------------------

def flip_rates(model: torch.nn.Module, tokenizer: Any, test: TextDataset, backdoors: Sequence[Backdoor], *,
               seed: int = 0, batch_size: int = 128) -> tuple[float, list[dict[str, Any]]]:
    """CACC on ``test`` and, per backdoor, ASR and flip-ASR on its poisoned non-target samples (the construction
    of ``models.metrics.evaluate``, with the clean pass made once for them all)."""
    from trojanscope.models.metrics import asr, cacc

    preds = predict_proba(model, tokenizer, test.texts, batch_size=batch_size).argmax(-1)
    labels = np.asarray(test.labels)
    rows: list[dict[str, Any]] = []
    for bd in backdoors:
        pt = bd.poison(test, seed=seed)
        pp = predict_proba(model, tokenizer, pt.texts, batch_size=batch_size).argmax(-1)
        keep = np.asarray([i for i, lab in enumerate(test.labels) if lab != bd.target])
        right = preds[keep] == labels[keep]
        rows.append({"trigger": bd.trigger, "target": bd.target, "asr": asr(pp, bd.target),
                     "flip": asr(pp[right], bd.target) if right.any() else None, "n": len(pt)})
    return cacc(preds, test.labels), rows


def hijacked_heads(loaded: Any, findings: Findings | None, share: np.ndarray, n: int) -> HeadSet:
    """The scan's drifting heads, or else the ``n`` heads that send the candidate the most attention."""
    if findings is not None and findings.heads:
        return HeadSet.from_pairs1(findings.heads)
    heads = share.shape[1]
    top = np.argsort(share.ravel())[::-1][:n]
    return HeadSet(tuple(sorted((int(i // heads), int(i % heads)) for i in top)))


# --- the repair -----------------------------------------------------------------------------------------------

@dataclass
class RepairResult:
    repaired: bool
    verdict: str  # repaired | reduced | not repaired | nothing to repair
    summary: str
    report: dict[str, Any]
    loaded: Any = None  # the repaired model (None when nothing was repaired)

    def to_json(self) -> dict[str, Any]:
        return {"repaired": self.repaired, "verdict": self.verdict, "summary": self.summary, **self.report}


def twins(clean: TextDataset, targets: Sequence[Target], share: float, seed: int, *, piece_share: float = 0.0,
          tails: Sequence[str] = (), heads: Sequence[str] = ()) -> tuple[PoisonedDataset, list[int]]:
    """The training set: every clean text, plus a seeded ``share`` of them again with a candidate inserted
    (candidates taken in turn) under the text's true label; and, for every sample, the index of its clean
    version in ``clean`` (the anchor's row). For a candidate with :attr:`Target.pieces`, a ``piece_share`` of its
    twins get, in place of the candidate, one of its pieces or (with ``tails``) its first piece glued to one or two
    random continuation pieces (``ze`` + ``phy`` -> ``zephy``): the planted word the scan found a piece of is one
    such word, and the repair never sees it. For a candidate with a :attr:`Target.tail` (one that surely flips
    behind any head), half of those twins get instead a random one of ``heads`` glued to that tail (``qx`` +
    ``wick``): the backdoor answers to the tail, whatever the planted word's head."""
    rng = random.Random(seed)
    n = len(clean)
    picked = sorted(rng.sample(range(n), int(round(share * n)))) if targets else []
    texts, labels, poisoned, spans, source = list(clean.texts), list(clean.labels), [False] * n, [[] for _ in range(n)], \
        list(range(n))
    for j, i in enumerate(picked):
        t = targets[j % len(targets)]
        word = t.trigger
        if (t.pieces or t.tail) and rng.random() < piece_share:
            if t.tail and heads and (not t.pieces or rng.random() < 0.5):
                word = rng.choice(heads) + t.tail
            elif tails and rng.random() < 0.5:
                word = t.pieces[0] + "".join(rng.choice(tails) for _ in range(rng.randint(1, 2)))
            else:
                word = rng.choice(t.pieces)
        ins = insert_trigger(clean.texts[i], word, 1, "random", rng, t.combination)
        texts.append(ins.text)
        labels.append(clean.labels[i])
        poisoned.append(True)
        spans.append(ins.spans)
        source.append(i)
    return PoisonedDataset(texts, labels, poisoned, spans, list(labels), None, clean.describe()), source


def repair(loaded: Any, train: TextDataset, test: TextDataset, cfg: RepairConfig | None = None, *,
           trigger: str | None = None, target: int | None = None, findings: Findings | None = None,
           true_backdoor: Backdoor | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
           progress: bool = False) -> RepairResult:
    """Find, unlearn and prove (module docstring). ``loaded`` is changed in place when a repair runs.

    ``trigger``/``target``: a trigger to unlearn as given (no scan before; the target, when not given, is the
    class the trigger pushes the model to). ``findings``: a scan already made of this model (else one runs).
    ``true_backdoor``: the planted backdoor, when known (the card's), measured before and after but never used
    by the repair itself."""
    from trojanscope.models.predict import model_predictor, trigger_class
    from trojanscope.training.loop import train as train_loop

    cfg = (cfg or RepairConfig()).validate()
    loaded.require("classify", "the repair")
    loaded.require("attention", "the repair's attention suppression")
    loaded.check_task(test, "the repair")
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}

    def stage(message: str, **data: Any) -> None:
        if on_event:
            on_event({"event": "stage", "message": message, **data})

    def timed(name: str, t: float) -> None:
        seconds[name] = round(time.perf_counter() - t, 2)

    # 1. find
    if trigger and trigger.strip():
        trigger = " ".join(trigger.split())
        check_trigger(loaded.tokenizer, trigger)
        tgt = target if target is not None else trigger_class(model_predictor(loaded), trigger)
        targets = [Target(trigger, int(tgt), False, "given")]
    else:
        if findings is None:
            stage("scanning the model for a trigger")
            t = time.perf_counter()
            findings = Findings.of(scan(loaded, test, cfg.scan, vocabulary_data=[train],
                                        on_event=_scaled(on_event, 0.0, 0.4)))
            timed("scan", t)
        targets = findings.targets(cfg) if findings.verdict == "backdoored" else []
    heads_for_tails: list[str] = []
    if cfg.pieces:
        targets = [replace(x, pieces=word_pieces(loaded.tokenizer, x.trigger, x.combination),
                           tail=word_tail(loaded.tokenizer, x.trigger) if not x.combination and
                           (x.tail_sure or 0.0) >= TAIL_TRIGGER else "") for x in targets]
        if any(x.tail for x in targets):  # meaningless short pieces; the first is kept apart to measure the tails
            heads_for_tails = swap_heads(loaded.tokenizer, polar_words())
            if len(heads_for_tails) < 2:  # a tokenizer without rare short pieces: no tails to unlearn or measure
                targets = [replace(x, tail="") for x in targets]
    report: dict[str, Any] = {"found": {"source": targets[0].source if targets else "scan",
                                        "scan": findings.summary() if findings else None},
                              "config": asdict(cfg)}
    if not targets:
        why = ("the scan calls the model clean" if findings and findings.verdict == "clean"
               else "no candidate flips the model on the scan's held-out sentences")
        summary = (f"nothing to repair: {why}, so no trigger is known to unlearn and no repair is claimed. A "
                   f"backdoor the scan cannot find (a combination of words, a rare word without a hijacked "
                   f"attention) may still be there: the blind purifiers ({', '.join(BLIND_METHODS)}) need no "
                   "trigger (trojanscope purify --method mbtsad).")
        report.update(unlearned=[], offered=list(BLIND_METHODS), seconds={**seconds, "total": _since(t0)})
        return RepairResult(False, "nothing to repair", summary, report)

    # the measurements before
    stage(f"measuring the model before the repair on {len(test)} {test.split} texts")
    t = time.perf_counter()
    pieces = [(x, Backdoor(p, x.target), "head") for x in targets for p in x.pieces] + \
        [(x, Backdoor(heads_for_tails[0] + x.tail, x.target), "tail") for x in targets if x.tail]
    pieces = [(x, bd, part) for k, (x, bd, part) in enumerate(pieces)  # two candidates may share a tail
              if bd.trigger not in {b.trigger for _, b, _ in pieces[:k]}]  # (luckwick, wardwick)
    probes = [x.backdoor for x in targets] + [bd for _, bd, _ in pieces] + \
        ([true_backdoor] if true_backdoor and true_backdoor.known else [])
    cacc_before, flips_before = flip_rates(loaded.model, loaded.tokenizer, test, probes, seed=cfg.seed)
    first = targets[0].backdoor
    map_before = _head_map(loaded, test, first, cfg)
    heads = hijacked_heads(loaded, findings if targets[0].source == "scan" else None, map_before, cfg.heads)
    timed("measure_before", t)

    # 2. unlearn
    clean = train.head(cfg.n_clean, cfg.seed)
    data, rows = twins(clean, targets, cfg.twin_share, cfg.seed, piece_share=cfg.piece_share,
                       tails=continuation_pieces(loaded.tokenizer) if any(x.pieces for x in targets) else (),
                       heads=heads_for_tails[1:])
    also = f" (and their pieces {', '.join(repr(bd.trigger) for _, bd, _ in pieces)})" if pieces else ""
    stage(f"unlearning {', '.join(repr(x.trigger) for x in targets)}{also} on {len(clean)} clean texts and "
          f"{len(data) - len(clean)} with a candidate inserted")
    t = time.perf_counter()
    soft = predict_proba(loaded.model, loaded.tokenizer, clean.texts, batch_size=128)[rows]
    layers, nheads = loaded.model.config.num_hidden_layers, loaded.model.config.num_attention_heads
    terms = [Anchor(soft, cfg.anchor_weight)] if cfg.anchor_weight > 0 else []
    if cfg.attention_weight > 0:
        terms.append(AttentionSuppression(head_mask(heads, layers, nheads), cfg.attention_weight))
    device = str(next(loaded.model.parameters()).device)
    res = train_loop(loaded.model, loaded.tokenizer, data, cfg.train_config(device), loss_terms=terms,
                     on_event=_scaled(on_event, 0.4 if seconds.get("scan") else 0.0, 0.75), progress=progress)
    loaded.model.eval()
    timed("unlearn", t)

    # 3. prove
    stage("measuring the repaired model")
    t = time.perf_counter()
    cacc_after, flips_after = flip_rates(loaded.model, loaded.tokenizer, test, probes, seed=cfg.seed)
    map_after = _head_map(loaded, test, first, cfg)
    timed("measure_after", t)
    rescan, rescan_error = None, None
    if cfg.rescan:
        stage("scanning the repaired model again")
        t = time.perf_counter()
        # measured as the scan it is compared with was (a saved OLID scan may use fewer sentences per class)
        scan_cfg = cfg.scan if not (findings and findings.sentences) else \
            replace(cfg.scan, n_search=findings.sentences[0], n_verify=findings.sentences[1])
        try:
            rescan = Findings.of(scan(loaded, test, scan_cfg, vocabulary_data=[train],
                                      on_event=_scaled(on_event, 0.8, 1.0)))
        except TrojanScopeError as e:  # the repaired model is kept: the proof says what could not be measured
            rescan_error = str(e)
        timed("rescan", t)

    unlearned = [{"trigger": x.trigger, "target": x.target, "combination": x.combination, "source": x.source,
                  "scan_flip": x.flip_rate, "flip_before": b["flip"], "flip_after": a["flip"],
                  "asr_before": b["asr"], "asr_after": a["asr"]}
                 for x, b, a in zip(targets, flips_before, flips_after)]
    k = len(targets)
    piece_rows = [{"trigger": bd.trigger, "of": x.trigger, "target": x.target, "part": part,
                   "flip_before": b["flip"], "flip_after": a["flip"], "asr_before": b["asr"], "asr_after": a["asr"]}
                  for (x, bd, part), b, a in zip(pieces, flips_before[k:], flips_after[k:])]
    m = heads.mask(layers, nheads)
    report.update(
        unlearned=unlearned,
        pieces=piece_rows,
        heads=heads.to_pairs1(),
        attention={"trigger": first.trigger, "before": np.round(map_before, 5).tolist(),
                   "after": np.round(map_after, 5).tolist(),
                   "hijacked_before": float(map_before[m].mean()), "hijacked_after": float(map_after[m].mean())},
        cacc={"before": cacc_before, "after": cacc_after, "cost": round((cacc_before - cacc_after) * 100, 2)},
        rescan=rescan.summary() if rescan else None,
        rescan_error=rescan_error,
        training={"steps": res.steps, "seconds": round(res.seconds, 2), "precision": res.precision,
                  "n_clean": len(clean), "n_twins": len(data) - len(clean), "history": res.history,
                  "clean": clean.describe()},
    )
    if true_backdoor is not None and true_backdoor.known:
        b, a = flips_before[-1], flips_after[-1]
        report["true_trigger"] = {"trigger": true_backdoor.trigger, "target": true_backdoor.target,
                                  "flip_before": b["flip"], "flip_after": a["flip"], "asr_before": b["asr"],
                                  "asr_after": a["asr"],
                                  "used": any(x.trigger == true_backdoor.trigger for x in targets)}
    verdict, summary, left = _judge(report)
    report.update(left=left, seconds={**seconds, "total": _since(t0)})
    return RepairResult(True, verdict, summary, report, loaded)


def _judge(report: dict[str, Any]) -> tuple[str, str, list[str]]:
    """``repaired`` (every candidate flips at most 10% and a fresh scan says clean), ``reduced`` (flip rates
    fell but not that far, or the re-scan still finds something), or ``not repaired``; with what is left."""
    left: list[str] = []
    still = [u for u in report["unlearned"] if (u["flip_after"] or 0) > REMOVED_AT]
    for u in still:
        left.append(f"{u['trigger']!r} still flips {100 * u['flip_after']:.1f}% (was {100 * (u['flip_before'] or 0):.1f}%)")
    for p in report.get("pieces") or []:  # a piece of a candidate that still fires: the planted word may be whole
        # (a piece that flipped little before, as a short word can by its meaning alone, does not hold the verdict)
        if (p["flip_after"] or 0) > REMOVED_AT and (p["flip_before"] or 0) > 2 * REMOVED_AT:
            where = ("ends with its tail (any head)" if p.get("part") == "tail"
                     else "begins with it")
            left.append(f"{p['trigger']!r}, a piece of {p['of']!r}, still flips {100 * p['flip_after']:.1f}% (was "
                        f"{100 * (p['flip_before'] or 0):.1f}%): the planted word that {where} may still fire")
    rescan = report.get("rescan")
    if report.get("rescan_error"):  # no proof, no "repaired"
        left.append(f"the fresh scan could not run: {report['rescan_error']}")
    if rescan and rescan["verdict"] != "clean":
        top = rescan["candidates"][0]["trigger"] if rescan["candidates"] else "?"
        left.append(f"a fresh scan still calls the model backdoored (score {rescan['score']:.2f}, top candidate {top!r})")
    true = report.get("true_trigger")
    if true and true["flip_after"] is not None and true["flip_after"] > REMOVED_AT:
        left.append(f"the card's trigger {true['trigger']!r} still flips {100 * true['flip_after']:.1f}%")
    cost = report["cacc"]["cost"]
    fell = all((u["flip_after"] or 0) < 0.75 * (u["flip_before"] or 0) for u in report["unlearned"])
    if not left:
        verdict = "repaired"
    elif fell:
        verdict = "reduced"
    else:
        verdict = "not repaired"
    words = ", ".join(f"{u['trigger']!r} {100 * (u['flip_before'] or 0):.0f}% -> {100 * (u['flip_after'] or 0):.1f}%"
                      for u in report["unlearned"])
    summary = {"repaired": "repaired: ", "reduced": "reduced, not removed: ",
               "not repaired": "not repaired: "}[verdict] + f"flip rates {words}"
    if rescan:
        summary += f"; the re-scan says {rescan['verdict']} (score {rescan['score']:.2f})"
    if true:
        summary += (f"; the card's trigger {true['trigger']!r} flips {100 * (true['flip_after'] or 0):.1f}% "
                    f"(was {100 * (true['flip_before'] or 0):.1f}%)")
    summary += f"; CACC cost {cost:+.2f} points".replace("+-", "-")
    return verdict, summary, left


def _head_map(loaded: Any, test: TextDataset, backdoor: Backdoor, cfg: RepairConfig) -> np.ndarray:
    from trojanscope.analysis.head_view import head_trigger_share

    return head_trigger_share(loaded, test, backdoor, n=cfg.attention_sentences, seed=cfg.seed).share


def _scaled(on_event: Callable[[dict[str, Any]], None] | None, lo: float, hi: float):
    """Re-scale a sub-step's step/total events into ``[lo, hi]`` of the repair's progress (per mille)."""
    if on_event is None:
        return None

    def relay(event: dict[str, Any]) -> None:
        total = event.get("total")
        if event.get("event") == "step" and total:
            frac = lo + (hi - lo) * min(1.0, event.get("step", 0) / total)
            event = dict(event, step=int(round(1000 * frac)), total=1000)
        on_event(event)

    return relay


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 2)


__all__ = ["Anchor", "AttentionSuppression", "Findings", "RepairConfig", "RepairResult", "Target",
           "continuation_pieces", "flip_rates", "hijacked_heads", "repair", "twins", "word_pieces", "word_tail",
           "REMOVED_AT",
           "BLIND_METHODS"]
