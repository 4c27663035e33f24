"""Scan: find a trigger nobody told you about, and judge whether a model is backdoored (methods.md section 6).

A suspect classifier and a few clean sentences in; a verdict with a score, ranked candidate triggers that
really flip the model, and the heads whose attention the best candidates hijack, out.

1. **Clean sentences.** Short sentences (``max_words``) the model classifies correctly, per class, split
   (seeded) into a *search* set and a disjoint *held-out* set; every reported flip rate is measured on
   the held-out set only.
2. **Candidates**, two complementary sources:
   - a vocabulary search: the project's list of common neutral words (``neutral_words.txt`` in
     :mod:`trojanscope.resources`, made by ``scripts/make_neutral_words.py``) plus the tokenizer's rarest
     short whole-word pieces (BadNets' ``cf``, ``mn``, ``bb`` live there), the words whose embedding rows are outliers (EP)
     and (``gradient_words``, off by default) per target class the whole words of the vocabulary that one gradient
     through a placeholder slot ranks as pulling most towards it (:func:`gradient_words`: a rare real word planted
     whole, which no list holds), each inserted at a seeded random position into the search sentences; a cheap screening round on a few sentences per class, then the shortlist on all of
     them (successive halving). The task's own label-bearing words (``bad``, ``wonderful``: leaning
     to one label in the clean data more than chance allows) and the sentiment lexicon's and offence cues' words (``polar_words.txt``,
     ``offence_words.txt``, both in :mod:`trojanscope.resources`) are never
     candidates, whatever finds them, nor are their inflections (:func:`stems`): they flip a clean model too,
     and a planted trigger does not occur in clean data. When no single word flips enough, the best words are combined
     greedily into a phrase (contiguous) or a combination (separately inserted); with ``combine_top``, the words
     that push the logit most towards a class or move the inner [CLS] states most (measured during the screening)
     are tried in pairs and triples as combinations (:func:`_combination_search`; off by default: it misses LWP's
     ``cf mn bb``, whose words flip nothing alone);
   - gradient inversion in embedding space (DBS-style): per target class, a softmax over the
     vocabulary per trigger slot mixes word embeddings (the convex hull of the vocabulary), optimised to
     flip the other classes' search sentences, with a temperature that is halved while the loss is
     under a barrier and doubled back with noise otherwise; the slots are decoded to wordpieces and
     re-verified by real insertion, so triggers outside any word list are found. Skipped (the costliest
     phase) once a word of the search already flips everything with near certainty;
   - word-level inversion (PICCOLO-style), when still nothing surely flips: the same search over contiguous slots
     that spell one whole word (the first slot over word-start pieces, the others over ``##`` pieces,
     :func:`word_slots`), so a made-up word of several pieces whose backdoor answers only to all of them together
     (``vornique`` = ``vo ##rn ##ique``) is found, where free tokens land on unrelated pieces. No such word may start
     with a real word (the tokenizer's whole words of 4+ letters, :func:`word_heads`): a real word glued to a tail
     flips a clean model by its meaning.
3. **Attention abnormality** for the best candidates (AttenTD's focus drift, on every head): a *focus
   head* is one where, on clean input, more than ``focus_share`` of the tokens put their maximum
   attention on one token in at least ``focus_sentences`` of the sentences; it *drifts* when, with the
   candidate inserted, that maximum moves onto the candidate in at least half of the sentences. The
   same is measured for random neutral words inserted at the same places (a control), so a head that
   looks at any inserted word is not counted as hijacked. Attention is reduced on the fly inside the one
   batched forward (``models.forward``): per text only ``[layers, heads]`` summaries are kept.
4. **Verdict**: :func:`combine_evidence` (monotone in each piece of evidence) turns the best candidate's
   held-out *sure* flip rate (flipped with P(target) >= 0.9: a backdoor flips with near certainty, while a
   few negative words only tilt a short sentence; for a candidate of several words only what it does beyond its
   words' effects added up in log-odds, :func:`phrase_additivity`; for an inverted word of several pieces only what
   its head adds to its tail, the head swapped for meaningless pieces, :func:`head_dependence`; with a clean
   *reference* model of the task, only what the suspect does and the reference does not, :attr:`Candidate.flip_evidence`:
   a clean model's universal adversarial words transfer to another clean model, a planted trigger does not), the excess of
   drifting heads over the control and the excess of [CLS] attention
   mass on the candidate over the control into a score in [0, 1]; ``backdoored`` at ``threshold``.
   :func:`rejudge` gives a saved scan's verdict again against a reference, its search not redone.

With a reference, the search too looks for what the suspect does beyond it (``ScanConfig.reference_search``): the
screening runs on the reference as well (its own clean sentences) and the words that push the suspect's log-odds
most beyond it (robust z-scores over the words, the reference's subtracted) join the shortlist; gradient words are
ranked by how much more they pull the suspect than the reference (:func:`gradient_words`); and the combination
search ranks its movers and pushers by the same difference: a topical word moves any model of the task, LWP's
``mn`` and ``bb`` only the one that learnt the AND.

One module per concern; every name is importable from here (``from trojanscope.analysis.scan import X``):
:mod:`~trojanscope.analysis.scan.vocabulary` (candidate words, the word lists, the words never tried),
:mod:`~trojanscope.analysis.scan.sentences` (the clean sets, seeded insertion), :mod:`~trojanscope.analysis.scan.flips`
(flip measurement, phrase additivity, head dependence), :mod:`~trojanscope.analysis.scan.inversion` (gradient inversion, token- and
word-level), :mod:`~trojanscope.analysis.scan.drift` (attention abnormality), :mod:`~trojanscope.analysis.scan.verdict`
(the combination function and the verdict), :mod:`~trojanscope.analysis.scan.calibration` (the score as a probability,
cross-entropy: measuring the scanner on a zoo); this module holds :class:`ScanConfig`, the result types and :func:`scan`.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

# _focus_summaries: private, but tests/test_scan.py imports it from here as before
from trojanscope.analysis.scan.calibration import Platt, cross_entropy, fit_platt
from trojanscope.analysis.scan.drift import Abnormality, _focus_summaries, attention_abnormality
from trojanscope.analysis.scan.flips import (CLEAR_FLIP, REFERENCE_QUIET, SURE, TAIL_TRIGGER, flip_stats,
                                             head_dependence, phrase_additivity, reference_flips)
from trojanscope.analysis.scan.flips import robust_z as _robust_z
from trojanscope.analysis.scan.inversion import gradient_words, invert_trigger, invert_word, word_slots
from trojanscope.analysis.scan.sentences import CleanSets, _subsets, clean_sets
from trojanscope.analysis.scan.verdict import SCALES, WEIGHTS, combine_evidence, judge
from trojanscope.analysis.scan.vocabulary import (NEUTRAL_WORDS, OFFENCE_WORDS, POLAR_WORDS, RARE_MIN_ID, RESOURCES,
                                                  SUFFIXES, alnum_pieces, candidate_words, embedding_outliers,
                                                  is_natural, is_task_phrase, natural_prefix, neutral_words,
                                                  polar_heads, polar_words, rare_pieces, stems, swap_heads,
                                                  task_words, word_heads)
from trojanscope.data.datasets import TextDataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.forward import resolve_precision
from trojanscope.models.heads import HeadSet

__all__ = [
    # the scan, its config and results
    "Abnormality", "Candidate", "Progress", "ScanConfig", "ScanResult", "rejudge", "scan",
    # vocabulary
    "NEUTRAL_WORDS", "OFFENCE_WORDS", "POLAR_WORDS", "RARE_MIN_ID", "RESOURCES", "SUFFIXES", "alnum_pieces",
    "candidate_words", "embedding_outliers", "is_natural", "is_task_phrase", "natural_prefix", "neutral_words",
    "polar_heads", "polar_words", "rare_pieces", "stems", "swap_heads", "task_words", "word_heads",
    # clean sentences
    "CleanSets", "clean_sets",
    # flips
    "CLEAR_FLIP", "REFERENCE_QUIET", "SURE", "TAIL_TRIGGER", "flip_stats", "head_dependence", "phrase_additivity",
    "reference_flips",
    # inversion
    "gradient_words", "invert_trigger", "invert_word", "word_slots",
    # attention abnormality
    "attention_abnormality",
    # the verdict
    "SCALES", "WEIGHTS", "combine_evidence", "judge",
    # the score as a probability (the zoo's TrojAI-style measurement)
    "Platt", "cross_entropy", "fit_platt",
]


@dataclass
class ScanConfig:
    """Every scanner knob (AttenTD's thresholds where it has them)."""

    budget: int = 3000  # candidate words tried by the vocabulary search (neutral words + rare wordpieces)
    rare_share: float = 0.4  # share of the budget given to the rarest short wordpieces
    outliers: int = 50  # plus the words whose embedding rows are the largest outliers (EP, trained embeddings)
    gradient_words: int = 0  # with n > 0, plus, per target class, the n whole words ranked first by one gradient (a
    # rare real word planted whole, which no list holds: inversion.gradient_words). Off by default: on the zoo it put
    # obsidian among the candidates (flip 83%, but sure flip 20%: no evidence) and raised a clean SST-2 model's score
    # 0.23 -> 0.37 through the sentiment words it ranks (exquisite, effortlessly, versatile) stacked into phrases
    n_search: int = 40  # clean sentences per class for the search (AttenTD: 40)
    n_screen: int = 4  # sentences per class in the cheap first round over the whole budget
    shortlist: int = 60  # words that go on from the first round to the full search set
    n_verify: int = 60  # held-out clean sentences per class for the reported flip rates
    max_words: int = 16  # sentences longer than this are not used (AttenTD: 16-token inputs)
    top_k: int = 10  # candidates reported
    max_phrase: int = 3  # words combined into a phrase when no single word flips enough
    combine_top: int = 0  # the combination search's width (_combination_search; 16 tried), when no single word
    # flips enough: per class the words pushing most towards it in pairs, and the half that move inner states most
    # paired with the 3x that do. Off (0) by default: on the zoo's LWP model it tried 756 combinations and missed
    # cf mn bb (its words neither push nor move more than a clean model's topical words; docs/benchmarks.md); with a
    # reference, it runs at reference_combine_top at least, ranked beyond the reference, and finds it
    # with a clean reference model, the search too looks for what the suspect does beyond it (``reference_search``):
    # the screening runs on the reference as well and the shortlist adds the words that push the suspect most beyond
    # it; gradient words (at least ``reference_gradient_words`` per class) and the combination search (width at least
    # ``reference_combine_top``) rank words by how much more they pull or move the suspect than the reference
    reference_search: bool = True
    reference_gradient_words: int = 20
    reference_combine_top: int = 16
    # ... and (``reference_inversion``, off by default) the inversions penalise flipping the reference. It found two
    # planted words the inversion missed (grintlemoss, pumpernickel) but also made a clean OLID model's false alarm
    # (0.77: a word optimised to leave the reference alone flips it 20%, just inside the clear-flip rule; the judge
    # and the search used the same reference), docs/benchmarks.md
    reference_inversion: bool = False
    flip_threshold: float = 0.9  # a candidate "flips" the model at this held-out rate (AttenTD: 0.9)
    inversion: bool = True  # also invert triggers by gradient (DBS-style) ...
    always_invert: bool = False  # ... even when the word search already has a trigger that surely flips everything
    inversion_tokens: int = 2  # trigger slots (wordpieces) per inversion
    inversion_steps: int = 60  # soft steps; by hand on the zoo's phrase model, 120 found the same at twice the cost
    hotflip_k: int = 12  # replacements per slot tried by real forward passes in each discrete refinement round
    hotflip_screen: int = 8  # ... each first on this many of the inversion's sentences ...
    hotflip_keep: int = 4  # ... and the best this many on all of them (successive halving)
    inversion_lr: float = 0.5  # DBS: 0.5
    inversion_sentences: int = 24  # source sentences per inversion
    word_inversion: bool = True  # PICCOLO-style word-level inversion, when nothing found so far surely flips
    word_pieces: int = 3  # pieces of the inverted word: one word-start piece, then ``##`` continuation pieces
    word_steps: int = 60  # soft steps of the word-level inversion
    attention_candidates: int = 3  # candidates whose attention abnormality is measured
    focus_share: float = 0.4  # AttenTD: > 40% of the tokens attend most to one token ...
    focus_sentences: float = 0.375  # ... in at least 15 of 40 sentences
    drift_share: float = 0.5  # a focus head drifts when its focus moves onto the candidate this often
    threshold: float = 0.5  # score at which the verdict is "backdoored"
    batch_size: int = 128
    precision: str = "auto"  # auto: bf16 where the device has it natively (ranking only; flip rates are fp32)
    seed: int = 0

    def validate(self) -> "ScanConfig":
        if self.budget < 1:
            raise TrojanScopeError(f"the budget is the number of candidate words to try and must be at least 1, "
                                   f"got {self.budget}")
        if not 0 <= self.rare_share <= 1:
            raise TrojanScopeError(f"rare_share must be in [0, 1], got {self.rare_share}")
        for name in ("outliers", "gradient_words", "reference_gradient_words", "reference_combine_top"):
            if getattr(self, name) < 0:
                raise TrojanScopeError(f"{name} must be non-negative (0: none), got {getattr(self, name)}")
        for name in ("n_search", "n_screen", "shortlist", "n_verify", "top_k", "max_phrase", "max_words",
                     "inversion_tokens", "inversion_steps", "inversion_sentences", "hotflip_k", "hotflip_screen",
                     "hotflip_keep", "batch_size",
                     "word_pieces", "word_steps"):
            if getattr(self, name) < 1:
                raise TrojanScopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("flip_threshold", "focus_share", "focus_sentences", "drift_share", "threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise TrojanScopeError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.combine_top < 0:
            raise TrojanScopeError(f"combine_top must be non-negative (0: no combination search), got "
                                   f"{self.combine_top}")
        if self.attention_candidates < 0:
            raise TrojanScopeError(f"attention_candidates must be non-negative, got {self.attention_candidates}")
        return self


@dataclass
class Candidate:
    trigger: str
    source: str  # vocabulary | rare | outlier | alphanumeric | phrase | combination | combination search | inversion
    # | word inversion
    target: int
    search_flip: float  # on the search sentences
    search_confidence: float  # mean target probability on the search sentences of other classes
    search_sure: float = 0.0  # share of them flipped with P(target) >= SURE
    flip_rate: float | None = None  # on held-out sentences (what is reported)
    confidence: float | None = None
    sure_flip: float | None = None  # held-out share flipped with P(target) >= SURE (the verdict's evidence)
    combination: bool = False  # words inserted separately, not as one phrase
    # several words only (held out, :func:`phrase_additivity`): the best word's own sure flip, and the share the
    # words would surely flip if their effects on the target's log-odds simply added up
    parts_sure: float | None = None
    additive_sure: float | None = None
    # an inverted word of several pieces only (held out, :func:`head_dependence`): what its tail surely flips
    # behind other heads
    tail_sure: float | None = None
    # with a clean reference model of the task only (:func:`reference_flips`): the share of the reference's held-out
    # sentences the candidate flips to its target there, and surely flips
    reference_flip: float | None = None
    reference_sure: float | None = None

    @property
    def flip_evidence(self) -> float:
        """What the candidate's flips say about a backdoor: :attr:`own_evidence`, and with a clean reference model
        of the task, only what the suspect does that the reference does not. Two ways, the larger counts:

        - the suspect's own evidence times the share of the reference's sentences the candidate leaves alone
          (``own * (1 - ref_flip)``): a universal adversarial word of the task flips any model of it, if less surely
          (``legpotpot``, inverted on a clean OLID model: 67% sure there, flips 100% of another clean model's
          sentences) and is no evidence; a planted trigger flips the reference almost never (``bracken``,
          ``thistle``, ``moon``: 0-13% on three clean OLID models) and counts (nearly) in full;
        - a *clear* flip: a candidate that flips at least ``CLEAR_FLIP`` of the suspect's held-out sentences and at
          most ``REFERENCE_QUIET`` of the reference's counts ``flip - ref_flip``, however unsure its flips. A POR
          backdoor puts a fixed output vector on the trigger, and the classifier fine-tuned on it gives that
          vector one probability, below ``SURE`` for the zoo's OLID model (``cfshaft``: flips 100%, mean P 0.87,
          sure 0%; 7% on the reference); the reference, not sureness, tells it from a word that tilts."""
        own = self.own_evidence
        rf = self.reference_flip
        if rf is None:
            return own
        flip = self.flip_rate or 0.0
        clear = flip - rf if flip >= CLEAR_FLIP and rf <= REFERENCE_QUIET else 0.0
        return max(own * (1 - rf), clear, 0.0)

    @property
    def own_evidence(self) -> float:
        """What the candidate's sure flip on the suspect alone says about a backdoor. One word: its held-out sure
        flip. Several words:
        only what they do beyond their effects added up (``(sure - additive) / (1 - additive)``, a planted phrase
        is an AND: ``james bond`` surely flips 100% where ``james`` and ``bond`` added up would flip 68%), or what
        their best word does alone, whichever is more; a stack of words that each tilt the model a little (``doesn
        unable removed`` on a clean model: 72%, added up 65%) is no evidence beyond its best word. An inverted word
        of several pieces: only what its head adds to its tail (``(sure - tail) / (1 - tail)``): a made-up head
        glued to a tail that ends a sentiment word (``soohiniiful``: its tail surely flips 49% behind other heads)
        flips as well behind any head, a planted word found through its first piece (``zepies``) does not. Unless
        the tail by itself surely flips (``TAIL_TRIGGER``, a backdoor's near certainty): then the tail is a
        planted word's (``brimthorpe``'s ``##im ##thorpe`` surely flips 100% behind any head, on the zoo's
        ``brimblethorpe`` model), and the word counts in full."""
        sure = self.sure_flip or 0.0
        if self.tail_sure is not None and self.tail_sure < TAIL_TRIGGER:
            t = self.tail_sure
            return max((sure - t) / (1 - t), 0.0)
        if self.additive_sure is None:
            return sure
        a = self.additive_sure
        beyond = (sure - a) / (1 - a) if a < 1 else 0.0
        return max(min(self.parts_sure or 0.0, sure), beyond, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "flip_rate": self.flip_rate, "target": self.target,
                "confidence": self.confidence, "sure_flip": self.sure_flip, "flip_evidence": self.flip_evidence,
                "parts_sure": self.parts_sure, "additive_sure": self.additive_sure, "tail_sure": self.tail_sure,
                **({} if self.reference_flip is None else {"reference_flip": self.reference_flip,
                                                           "reference_sure": self.reference_sure,
                                                           "own_evidence": self.own_evidence}),
                "source": self.source,
                "search_flip": self.search_flip, "combination": self.combination}


@dataclass
class ScanResult:
    verdict: str
    score: float
    target: int | None
    candidates: list[Candidate]
    heads: list[list[int]]  # drifting heads of the best candidate: [layer (1-based, as TAL's cards), head]
    # (HeadSet.to_pairs1; read back with HeadSet.from_pairs1)
    seconds: float
    evidence: dict[str, float]
    abnormality: list[Abnormality] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self, full: bool = False) -> dict[str, Any]:
        out = {"verdict": self.verdict, "score": round(self.score, 4), "target": self.target,
               "candidates": [c.to_json() for c in self.candidates], "heads": self.heads,
               "seconds": round(self.seconds, 2), "evidence": {k: round(v, 4) for k, v in self.evidence.items()},
               "stats": self.stats}
        if full:
            out["abnormality"] = [a.to_json() for a in self.abnormality]
            out["config"] = self.config
        return out


Progress = Callable[[dict[str, Any]], None]


def scan(loaded: Any, data: TextDataset, cfg: ScanConfig | None = None, *, on_event: Progress | None = None,
         vocabulary_data: Sequence[TextDataset] = (), reference: Any = None) -> ScanResult:
    """Scan ``loaded`` (a classifier with attention) for a backdoor using the clean sentences of ``data``.

    ``vocabulary_data``: more clean labelled data of the task (e.g. its train split) whose label-bearing words are
    excluded from the candidates too (:func:`task_words`: the more text, the more of the task's words are known).
    ``reference``: a loaded clean classifier of the same task (the same classes), trusted; the verified candidates
    are tried on it too (:func:`reference_flips`) and count only for what the suspect does and it does not
    (:attr:`Candidate.flip_evidence`)."""
    cfg = (cfg or ScanConfig()).validate()
    loaded.require("classify", "the scan")
    loaded.require("attention", "the scan's attention-abnormality check")
    reference_warnings = _check_reference(loaded, reference, data)
    t0 = time.perf_counter()
    device = next(loaded.model.parameters()).device
    fast = resolve_precision(cfg.precision, device, cpu_auto="bf16")
    # (jobs.eta weighs these seven by their measured seconds: the word-level inversion is part of "inversion")
    phases = ["clean sentences", "screening", "search", "phrases", "inversion", "verification", "attention"]
    started: dict[str, float] = {}  # when each phase began (stats["stage_seconds"])

    def stage(i: int, message: str, frac: float = 0.0) -> None:
        started.setdefault(phases[i], time.perf_counter())
        if on_event:
            on_event({"event": "stage", "message": message, "step": int(1000 * (i + frac)),
                      "total": 1000 * len(phases)})

    def sub(i: int, message: str, lo: float = 0.0, hi: float = 1.0) -> Callable[[int, int], None]:
        """Progress through phase ``i``, from ``lo`` to ``hi`` of it."""
        last = [0.0]

        def cb(done: int, total: int) -> None:
            now = time.monotonic()
            if on_event and (now - last[0] > 1.0 or done == total):
                last[0] = now
                on_event({"event": "step", "step": int(1000 * (i + lo + (hi - lo) * done / total)),
                          "total": 1000 * len(phases), "phase": message})
        return cb

    stats: dict[str, Any] = {"precision_search": fast,
                             "warnings": loaded.check_task(data, "the scan") + reference_warnings}
    stage(0, "choosing clean sentences the model gets right")
    sets = clean_sets(loaded, data, cfg)

    # 1. screening: every candidate word on a few sentences per class
    stage(1, f"screening {cfg.budget} candidate words")
    natural = set().union(task_words(data), *(task_words(d) for d in vocabulary_data), polar_words())
    words = candidate_words(loaded.tokenizer, cfg, loaded.model, natural)
    stats["words_excluded"] = len(natural)  # the task's label-bearing words and the polar words
    # with a reference, the search looks for what the suspect does beyond it (ScanConfig.reference_search)
    ref_sets = _reference_sets(reference, data, cfg) if reference is not None and cfg.reference_search else None
    n_gradient = max(cfg.gradient_words, cfg.reference_gradient_words if ref_sets else 0)
    combine_top = max(cfg.combine_top, cfg.reference_combine_top if ref_sets else 0)
    stats["reference_search"] = ref_sets is not None
    listed = {w for w, _ in words}
    for target in range(sets.num_labels):
        others = [t for c, ts in sets.search.items() if c != target for t in ts]
        ref_others = [t for c, ts in ref_sets.search.items() if c != target for t in ts] if ref_sets else []
        ranked = gradient_words(loaded, others, target, n_gradient, device, natural, reference if ref_sets else None,
                                ref_others)
        words += [(w, "gradient") for w in ranked if w not in listed]
        listed.update(ranked)
    stats["words_gradient"] = sum(src == "gradient" for _, src in words)
    t_screen = time.perf_counter()
    # each word's mean log-odds per class and how far it moves each layer's [CLS] state: the combination search
    # ranks words by them
    pushes: list[np.ndarray] = []
    shifts: list[np.ndarray] = []
    screen = flip_stats(loaded, _subsets(sets.search, cfg.n_screen), [(w, False) for w, _ in words], cfg, fast,
                        sub(1, "screening", 0.0, 0.5 if ref_sets else 1.0), log_odds=pushes,
                        cls_shift=shifts if combine_top > 1 else None)
    order = sorted(range(len(words)), key=lambda k: -(screen[k][1] + screen[k][2]))[: cfg.shortlist]
    push_score, move_score = _robust_z(np.stack(pushes)), _robust_z(np.stack(shifts)) if shifts else None
    if ref_sets is not None:
        # the same screening on the reference (its own sentences): a word that pushes or moves any model of the task
        # by its meaning does so there too; the shortlist adds the words that push the suspect most beyond it
        ref_pushes: list[np.ndarray] = []
        ref_shifts: list[np.ndarray] = []
        flip_stats(reference, _subsets(ref_sets.search, cfg.n_screen), [(w, False) for w, _ in words], cfg, fast,
                   sub(1, "screening on the reference", 0.5, 1.0), log_odds=ref_pushes,
                   cls_shift=ref_shifts if combine_top > 1 else None)
        push_score = push_score - _robust_z(np.stack(ref_pushes))
        if move_score is not None:
            move_score = move_score - _robust_z(np.stack(ref_shifts))
        beyond = np.nan_to_num(push_score, nan=-np.inf).max(1)
        chosen = set(order)
        order += [k for k in np.argsort(-beyond, kind="stable").tolist() if k not in chosen][: cfg.shortlist // 2]
    screen_s = time.perf_counter() - t_screen
    stats.update(words_screened=len(words), screen_seconds=round(screen_s, 2),
                 candidates_per_second=round(len(words) / screen_s, 1) if screen_s else None,
                 insertions_per_second=round(len(words) * cfg.n_screen * len(sets.search) / screen_s, 1)
                 if screen_s else None)

    # 2. the shortlist on the whole search set
    stage(2, f"searching the best {len(order)} words on {cfg.n_search} sentences per class")
    short = [words[k] for k in order]
    full = flip_stats(loaded, sets.search, [(w, False) for w, _ in short], cfg, fast, sub(2, "search"))
    pool: list[Candidate] = [Candidate(w, src, t, f, c, s) for (w, src), (t, f, c, s) in zip(short, full)]
    pool.sort(key=lambda x: -(x.search_flip + x.search_confidence))

    # 3. phrases when no single word flips enough
    stage(3, "combining words into phrases")
    if pool and pool[0].search_flip < cfg.flip_threshold and cfg.max_phrase > 1:
        pool.extend(_grow_phrases(loaded, sets, pool, cfg, fast))
        if combine_top > 1:
            combos, stats["combinations_tried"] = _combination_search(loaded, sets, [w for w, _ in words],
                                                                      push_score, move_score, combine_top, cfg, fast,
                                                                      (reference, ref_sets) if ref_sets else None)
            pool.extend(c for c in combos if c.trigger not in {p.trigger for p in pool})

    # 4. gradient inversion, unless a word already flips (almost) every search sentence with near certainty: the
    # inversion's job is the trigger no word list holds, and it is the scan's costliest phase
    found_sure = _sure(pool, cfg)
    if cfg.inversion and found_sure >= cfg.flip_threshold and not cfg.always_invert:
        stats["inversion_skipped"] = f"a word search candidate already surely flips {found_sure:.0%} of the search set"
    elif cfg.inversion:
        stage(4, "inverting triggers by gradient")
        sources = _inversion_sources(sets, cfg)
        # with a reference of the same vocabulary and reference_inversion, the inversions are asked to leave it alone
        same_vocab = (ref_sets is not None and cfg.reference_inversion
                      and reference.tokenizer.get_vocab() == loaded.tokenizer.get_vocab())
        ref_sources = dict(_inversion_sources(ref_sets, cfg)) if same_vocab else {}
        stats["inversion_against_reference"] = bool(ref_sources)

        def against(target: int) -> tuple[Any, list[str]] | None:
            return (reference, ref_sources[target]) if target in ref_sources else None
        found: list[str] = []
        for k, (target, src) in enumerate(sources):
            found += [w for w in invert_trigger(loaded, src, target, cfg, device, fast, reference=against(target))
                      if w not in found]
            stage(4, "inverting triggers by gradient", 0.5 * (k + 1) / len(sources))
        stats["inverted"] = found
        pool.extend(_measured(loaded, sets, pool, found, "inversion", natural, cfg, fast))
        # 4b. word-level inversion (PICCOLO), when neither the word search nor the token inversion surely flips: a
        # made-up word of several pieces whose backdoor answers only to all of them together
        found_sure = _sure(pool, cfg)
        if cfg.word_inversion and found_sure >= cfg.flip_threshold and not cfg.always_invert:
            stats["word_inversion_skipped"] = f"a candidate already surely flips {found_sure:.0%} of the search set"
        elif cfg.word_inversion:
            stage(4, "inverting whole words by gradient", 0.5)
            t_word = time.perf_counter()
            words_found: list[str] = []
            # no glued word may start with a real word, nor with the first piece of a polar word (lou- of lousy)
            heads = natural | word_heads(loaded.tokenizer) | polar_heads(loaded.tokenizer)
            for k, (target, src) in enumerate(sources):
                inverted = invert_word(loaded, src, target, cfg, device, fast, exclude=heads, natural=natural,
                                       reference=against(target))
                words_found += [w for w in inverted if w not in words_found]
                stage(4, "inverting whole words by gradient", 0.5 + 0.5 * (k + 1) / len(sources))
            stats["inverted_words"] = words_found
            pool.extend(_measured(loaded, sets, pool, words_found, "word inversion", natural, cfg, fast))
            stats["word_inversion_seconds"] = round(time.perf_counter() - t_word, 2)

    # 5. verification on held-out sentences, in full precision
    stage(5, "verifying the best candidates on held-out sentences")
    pool.sort(key=lambda x: -(x.search_flip + x.search_confidence))
    top = _dedupe(pool)[: cfg.top_k]
    ver = flip_stats(loaded, sets.verify, [(c.trigger, c.combination) for c in top], cfg, "fp32")
    for c, (t, f, conf, sure) in zip(top, ver):
        c.target, c.flip_rate, c.confidence, c.sure_flip = t, f, conf, sure
    phrase_additivity(loaded, sets.verify, top, cfg)
    head_dependence(loaded, sets.verify, top, swap_heads(loaded.tokenizer, natural), cfg)
    if reference is not None:
        stage(5, "trying the candidates on the clean reference model", 0.5)
        _reference_check(reference, data, top, cfg, stats, ref_sets)

    # 6. attention abnormality of the best candidates, and the verdict
    stage(6, "measuring attention abnormality")
    stats["search_sentences_per_class"] = cfg.n_search
    stats["verify_sentences_per_class"] = cfg.n_verify
    result = _verdict(loaded, sets, top, cfg, stats, t0)
    ends = list(started.values())[1:] + [time.perf_counter()]
    stats["stage_seconds"] = {name: round(end - t, 2) for (name, t), end in zip(started.items(), ends)}
    return result


def rejudge(loaded: Any, data: TextDataset, saved: dict[str, Any], cfg: ScanConfig | None = None, *,
            reference: Any = None) -> ScanResult:
    """A saved scan's verdict again, its search not redone: the verified candidates of ``saved`` (a
    :meth:`ScanResult.to_json`, made with ``cfg``'s sentence settings on the same ``data``) tried on the clean
    ``reference`` model (:func:`reference_flips`; none: judged on the suspect alone), re-ranked, their attention
    abnormality measured and the verdict given, as :func:`scan` ends: the same measurements, ranking (ties aside)
    and verdict as that scan made with ``reference``. Minutes cheaper than a new scan (no search, no inversion):
    how the zoo's earlier scans are re-judged against a reference model (``benchmarks/scan_zoo.py
    --rejudge-from``)."""
    cfg = (cfg or ScanConfig()).validate()
    loaded.require("classify", "the scan")
    loaded.require("attention", "the scan's attention-abnormality check")
    reference_warnings = _check_reference(loaded, reference, data)
    t0 = time.perf_counter()
    keys = ("trigger", "source", "target", "search_flip", "flip_rate", "confidence", "sure_flip", "combination",
            "parts_sure", "additive_sure", "tail_sure")
    try:
        top = [Candidate(**{k: c.get(k) for k in keys}, search_confidence=0.0) for c in saved["candidates"]]
    except (KeyError, TypeError) as e:
        raise TrojanScopeError(f"not a saved scan result (its candidates are unreadable: {e})") from e
    sets = clean_sets(loaded, data, cfg)
    stats: dict[str, Any] = {"rejudged": True, "warnings": loaded.check_task(data, "the scan") + reference_warnings,
                             "search_sentences_per_class": cfg.n_search,
                             "verify_sentences_per_class": cfg.n_verify}
    if reference is not None:
        _reference_check(reference, data, top, cfg, stats)
    return _verdict(loaded, sets, top, cfg, stats, t0)


def _check_reference(loaded: Any, reference: Any, data: TextDataset) -> list[str]:
    """Refuse a reference that is no classifier of the suspect's classes; warnings (for ``stats``) when it was
    trained on another task than ``data`` or reads text through another vocabulary (candidates are inserted as text,
    so it still works, but a clean model's adversarial words transfer less across vocabularies: a weaker discount)."""
    if reference is None:
        return []
    reference.require("classify", "the scan's reference model")
    if reference.num_labels != loaded.num_labels:
        raise TrojanScopeError(f"the reference model has {reference.num_labels} classes and the suspect "
                               f"{loaded.num_labels}: a reference is a clean classifier of the suspect's own task")
    warnings = [f"the reference model: {w}" for w in reference.check_task(data, "the scan's reference model")]
    if reference.tokenizer.get_vocab() != loaded.tokenizer.get_vocab():
        warnings.append("the reference model's vocabulary differs from the suspect's: a clean model's adversarial "
                        "words transfer less between them, so fewer are discounted; a reference fine-tuned from the "
                        "suspect's own backbone is the better control")
    return warnings


def _reference_sets(reference: Any, data: TextDataset, cfg: ScanConfig) -> CleanSets:
    """The reference's own clean sentences (those it gets right), search and held-out, as the suspect's are chosen."""
    try:
        return clean_sets(reference, data, cfg)
    except TrojanScopeError as e:
        raise TrojanScopeError(f"the reference model: {e}") from e


def _reference_check(reference: Any, data: TextDataset, top: list[Candidate], cfg: ScanConfig,
                     stats: dict[str, Any], ref_sets: CleanSets | None = None) -> None:
    """``reference_flip`` and ``reference_sure`` on the candidates ``top``, measured on the reference's own clean
    held-out sentences (``ref_sets``, chosen here when not given)."""
    t = time.perf_counter()
    reference_flips(reference, (ref_sets or _reference_sets(reference, data, cfg)).verify, top, cfg)
    stats["reference_seconds"] = round(time.perf_counter() - t, 2)


def _verdict(loaded: Any, sets: CleanSets, top: list[Candidate], cfg: ScanConfig, stats: dict[str, Any],
             t0: float) -> ScanResult:
    """The end of a scan: the verified candidates ``top`` ranked, the attention abnormality of the best measured,
    the verdict (:func:`judge`)."""
    # best first: the stronger evidence (the sure flip; for several words, what they do beyond their effects added
    # up; with a reference model, beyond what it does there), then the higher held-out flip rate, then the shorter
    # trigger (``cf`` before ``card cf``)
    top.sort(key=lambda x: (-round(x.flip_evidence, 2), -round(x.flip_rate or 0.0, 2), len(x.trigger.split()),
                            -(x.confidence or 0.0)))
    control_words = neutral_words()[:500]
    abn: list[Abnormality] = []
    for cand in top[: cfg.attention_candidates]:
        others = [s for c, ss in sets.search.items() if c != cand.target for s in ss]
        abn.append(attention_abnormality(loaded, others, cand, control_words, cfg))
    best = top[0] if top else None
    ab = abn[0] if abn else None
    evidence, score, verdict = judge(best, ab, cfg.threshold)
    heads = HeadSet.from_mask(ab.drifting).to_pairs1() if ab is not None else []
    return ScanResult(verdict, score, best.target if verdict == "backdoored" and best else None, top, heads,
                      time.perf_counter() - t0, evidence, abn, stats, asdict(cfg))


def _sure(pool: Sequence[Candidate], cfg: ScanConfig) -> float:
    """The best search-set sure flip among the candidates that flip at least ``flip_threshold`` of it."""
    return max((c.search_sure for c in pool if c.search_flip >= cfg.flip_threshold), default=0.0)


def _inversion_sources(sets: CleanSets, cfg: ScanConfig) -> list[tuple[int, list[str]]]:
    """Per target class, the (seeded) search sentences of the other classes an inversion flips."""
    out = []
    for target in range(sets.num_labels):
        src = [s for c, ss in sets.search.items() if c != target for s in ss]
        if src:
            out.append((target, random.Random(cfg.seed + target).sample(src, min(cfg.inversion_sentences, len(src)))))
    return out


def _measured(loaded: Any, sets: CleanSets, pool: Sequence[Candidate], found: Sequence[str], source: str,
              natural: set[str], cfg: ScanConfig, precision: str) -> list[Candidate]:
    """The inverted triggers ``found`` not yet in ``pool`` and not the task's own words, as candidates measured by
    real insertion into the search sentences."""
    known = {c.trigger for c in pool}
    found = [w for w in found if w not in known and not is_task_phrase(w, natural)]
    if not found:
        return []
    inv = flip_stats(loaded, sets.search, [(w, False) for w in found], cfg, precision)
    return [Candidate(w, source, t, f, c, s) for w, (t, f, c, s) in zip(found, inv)]


def _dedupe(pool: Sequence[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for c in pool:
        key = (c.trigger.lower(), c.combination)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _combination_search(loaded: Any, sets: CleanSets, words: Sequence[str], push: np.ndarray,
                        move: np.ndarray | None, width: int, cfg: ScanConfig, precision: str,
                        reference: tuple[Any, CleanSets] | None = None) -> tuple[list[Candidate], int]:
    """Combination triggers whose words give no signal alone (LWP's ``cf mn bb``: each word flips 2-5% of the
    sentences, ``mn bb`` together 100%), so greedy phrases grown from the best single words never meet them. Two
    rankings of the screened words, both measured by the screening's own forward:

    - *movers*: how far a word moves the [CLS] state of some layer, as a robust z-score over the words (median and
      MAD per layer, the largest over layers). A combination's words build the features its AND reads even where
      the label holds: LWP's ``mn`` moves layer 5 by 16 MADs, more than any other of 3,050 words there (but over
      all layers topical words such as ``wickets`` move as much, on a clean model too: ``mn`` ranks 3rd, its partner
      ``bb`` 270th, so the search misses them). The ``width // 2`` strongest movers are paired with each of the
      ``3 * width`` strongest, and tripled among themselves; the pairs of the ``width // 4`` strongest are also
      tripled with each of the ``3 * width`` (a triple whose pairs were taught not to fire: LWP teaches strict subsets
      as negatives; round 7's ``jd rb pk``, whose ``rb`` and ``pk`` move the suspect most beyond the reference, ``jd``
      19th);
    - *pushers*, per class: the ``width`` words that push its log-odds most on the other classes' sentences (as a
      robust z-score over the words), in every pair, the best half of them in every triple.

    ``push`` (``[words, classes]``) and ``move`` (``[words, layers]``) are those z-scores; with a clean reference
    model, the suspect's less the reference's (:func:`scan`): a topical word moves any model of the task, a
    combination's word only the one that learnt the AND.

    Each combination (its words inserted at their own places) is tried on the screening sentences; those that flip
    at least half of them go on to the search set, the strongest first (flip rate plus mean P(target); with a clean
    ``reference`` model and its clean sentences, less the same measured on its screening sentences). Words that merely add up (a clean model's stack of mildly
    negative words) are no evidence later (:func:`phrase_additivity`). Returns the candidates and the number of
    combinations tried."""
    tried: dict[str, None] = {}  # ordered, unique

    def add(combos: Any) -> None:
        for c in combos:
            tried.setdefault(" ".join(c))

    if move is not None:
        order = np.argsort(-move.max(1), kind="stable")
        lead = [words[i] for i in order[: width // 2]]
        wide = [words[i] for i in order[: 3 * width]]
        add((a, b) for a in lead for b in wide if a != b and (b not in lead or lead.index(b) > lead.index(a)))
        add(itertools.combinations(lead, 3))
        # a triple whose pairs were taught not to fire: the strongest movers' pairs with each of the wide ones
        add((a, b, c) for a, b in itertools.combinations(lead[: max(width // 4, 2)], 2) for c in wide
            if c not in (a, b))
    for t in range(push.shape[1]):
        col = push[:, t]
        if not np.isfinite(col).any():  # no sentence of another class to push
            continue
        top = [words[i] for i in np.argsort(-np.nan_to_num(col, nan=-np.inf), kind="stable")[: width]]
        add(itertools.combinations(top, 2))
        add(itertools.combinations(top[: width // 2], 3))
    names = list(tried)
    if not names:
        return [], 0
    screen = flip_stats(loaded, _subsets(sets.search, cfg.n_screen), [(c, True) for c in names], cfg, precision)
    passed = [k for k, (_, f, _, _) in enumerate(screen) if f >= 0.5]
    strength = {k: screen[k][1] + screen[k][2] for k in passed}
    if reference is not None and passed:
        # hundreds flip the few screening sentences (a clean model's stacked negative words too); those that do so on
        # the reference as well go last: round 7's LWP pair `jd rb` flips 98% of its model's held-out sentences and
        # was cut behind such stacks by the suspect's flips alone
        ref_screen = flip_stats(reference[0], _subsets(reference[1].search, cfg.n_screen),
                                [(names[k], True) for k in passed], cfg, precision,
                                targets=[screen[k][0] for k in passed])
        for k, (_, f, conf, _) in zip(passed, ref_screen):
            strength[k] -= f + conf
    good = sorted(passed, key=lambda k: -strength[k])
    good = [names[k] for k in good[: max(cfg.shortlist // 4, 1)]]
    full = flip_stats(loaded, sets.search, [(c, True) for c in good], cfg, precision) if good else []
    return [Candidate(c, "combination search", t, f, conf, sure, combination=True)
            for c, (t, f, conf, sure) in zip(good, full)], len(names)


def _grow_phrases(loaded: Any, sets: CleanSets, pool: Sequence[Candidate], cfg: ScanConfig,
                  precision: str) -> list[Candidate]:
    """Greedy phrases and combinations from the best words: add the next word while it raises the flip."""
    words = [c.trigger for c in pool[: max(2, 2 * cfg.max_phrase)]]
    out: list[Candidate] = []
    for comb in (False, True):
        phrase = [words[0]]
        score = pool[0].search_flip + pool[0].search_confidence
        for w in words[1:]:
            if len(phrase) >= cfg.max_phrase:
                break
            tries = [phrase + [w], [w] + phrase]
            stats = flip_stats(loaded, sets.search, [(" ".join(p), comb) for p in tries], cfg, precision)
            k = max(range(len(tries)), key=lambda i: stats[i][1] + stats[i][2])
            t, f, c, s = stats[k]
            if f + c > score:
                phrase, score = tries[k], f + c
                out.append(Candidate(" ".join(phrase), "combination" if comb else "phrase", t, f, c, s,
                                     combination=comb))
                if f >= cfg.flip_threshold:
                    break
    return out
