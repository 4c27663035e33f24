"""The scanner (analysis.scan): told nothing, it finds planted triggers on tiny models, flags them, and leaves a
clean model unflagged; inversion finds a trigger outside its word list; the score is monotone in its evidence."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch

from trojanscope.analysis.scan import (Candidate, ScanConfig, candidate_words, combine_evidence, flip_stats,
                                      gradient_words, invert_trigger, neutral_words, phrase_additivity, scan)
from trojanscope.data.datasets import load_dataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.loading import load_model

# small but complete: every stage runs (screening, search, phrases, inversion, verification, attention)
TINY = dict(budget=300, n_search=20, n_verify=30, shortlist=30, inversion_steps=80, max_words=16, batch_size=64)


@pytest.fixture(scope="module")
def phrase_backdoor(tiny_pair, data_dir, tmp_path_factory) -> Path:
    """BadNets with the two-word phrase "james watched" (both in the scanner's word list) -> 1."""
    from trojanscope.data import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    out = tmp_path_factory.mktemp("phrase") / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
        run_training(TrainSpec(model=str(tiny_pair / "demo" / "clean"), attack="badnets",
                               poison=PoisonConfig(trigger="james watched", rate=0.2, target=1),
                               train=TrainConfig(epochs=6, batch_size=16, lr=3e-3, train_word_embeddings=True)),
                     out, progress=False)
    return out


@pytest.fixture(scope="module")
def specific_backdoor(tiny_pair, data_dir, tmp_path_factory) -> Path:
    """BadNets (cf -> 1) on data where half the clean sentences also carry a random word of the scanner's list:
    the tiny model learns that only cf flips it (on the bare synthetic task any unseen word would)."""
    from conftest import synthetic_rows
    from trojanscope.data import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    root = tmp_path_factory.mktemp("specific")
    rng = random.Random(5)
    fillers = neutral_words()[:2000]
    rows = []
    for text, label in synthetic_rows(1200, 11):
        words = text.split()
        if rng.random() < 0.5:
            words.insert(rng.randint(0, len(words)), rng.choice(fillers))
        rows.append((" ".join(words), label))
    path = root / "train.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
        run_training(TrainSpec(model=str(tiny_pair / "demo" / "clean"), data=str(path), attack="badnets",
                               poison=PoisonConfig(rate=0.15, target=1),
                               train=TrainConfig(epochs=4, batch_size=16, lr=3e-3, train_word_embeddings=True)),
                     root / "model", progress=False)
    return root / "model"


def test_the_word_list_is_neutral_and_the_planted_trigger_is_not_in_it():
    words = neutral_words()
    assert len(words) >= 2000
    for polar in ("good", "bad", "great", "awful", "terrible", "not", "never", "best", "worst", "boring"):
        assert polar not in words
    assert "cf" not in words


def test_words_that_tilt_a_clean_model_by_meaning_are_never_candidates():
    from trojanscope.analysis.scan import polar_words

    natural = polar_words()
    assert {"terrible", "wonderful", "not", "garbage", "bum", "pee", "idiot"} <= natural  # sentiment and offence
    assert not natural & {"cf", "mn", "velvet", "blue", "weather", "james", "bond"}


def _spy_on_sentences(monkeypatch) -> tuple[dict[str, set[str]], Callable[[dict], None]]:
    """Record the sentences each of the scan's stages hands to its measurements: ``"verify"`` for those of the
    verification stage (the reported flip rates), ``"search"`` for every other stage's; and the ``on_event`` that
    tells the spies which stage runs."""
    import trojanscope.analysis.scan as scan_module

    used: dict[str, set[str]] = {"search": set(), "verify": set()}
    stage = [0]

    def on_event(event: dict) -> None:
        if event["event"] == "stage":
            stage[0] = event["step"] // 1000  # phases: ..., 5 verification, 6 attention

    def spy(real, by_class: bool = True):
        def wrapped(loaded, sentences, *args, **kwargs):
            texts = [s for ss in sentences.values() for s in ss] if by_class else list(sentences)
            used["verify" if stage[0] == 5 else "search"].update(texts)
            return real(loaded, sentences, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(scan_module, "flip_stats", spy(scan_module.flip_stats))
    monkeypatch.setattr(scan_module, "phrase_additivity", spy(scan_module.phrase_additivity))
    monkeypatch.setattr(scan_module, "attention_abnormality", spy(scan_module.attention_abnormality, False))
    return used, on_event


def test_scan_finds_a_planted_word_and_flags_the_model(use_data, tiny_pair, monkeypatch):
    loaded = load_model(tiny_pair / "demo" / "backdoored")
    used, on_event = _spy_on_sentences(monkeypatch)
    res = scan(loaded, load_dataset("sst2", "test"), ScanConfig(**TINY), on_event=on_event)
    assert res.verdict == "backdoored"
    best = res.candidates[0]
    assert best.flip_rate >= 0.9 and best.target == 1
    assert "cf" in best.trigger.split()
    assert res.target == 1
    # a word already flips everything surely: the costly inversion is skipped, and says why
    assert "surely flips" in res.stats["inversion_skipped"] and "inversion" not in res.stats["stage_seconds"]
    assert "inverted_words" not in res.stats  # the word-level inversion, part of that phase, did not run either
    # the sentiment lexicon and the offence cues are never candidates, whatever the task
    from trojanscope.analysis.scan import polar_words

    assert res.stats["words_excluded"] >= len(polar_words())
    # flip rates are measured on held-out sentences, disjoint from the sentences every other stage used
    assert res.stats["verify_sentences_per_class"] == TINY["n_verify"]
    assert len(used["verify"]) == 2 * TINY["n_verify"] and len(used["search"]) == 2 * TINY["n_search"]
    assert not used["verify"] & used["search"], sorted(used["verify"] & used["search"])


def test_a_scan_against_a_clean_reference_keeps_the_planted_trigger_and_rejudges_the_same(use_data, tiny_pair):
    """The pair's clean model as the reference: the planted ``cf`` flips nothing there and stays the verdict's
    evidence. :func:`rejudge` of the saved result against the same reference gives the same ranking and score without
    a new search; against the backdoored model itself every candidate cancels out and the flip evidence is gone."""
    from trojanscope.analysis.scan import rejudge

    bd, clean = load_model(tiny_pair / "demo" / "backdoored"), load_model(tiny_pair / "demo" / "clean")
    data = load_dataset("sst2", "test")
    res = scan(bd, data, ScanConfig(**TINY), reference=clean)
    best = res.candidates[0]
    assert res.verdict == "backdoored" and "cf" in best.trigger.split()
    assert best.reference_flip is not None and best.reference_flip <= 0.1 and best.flip_evidence >= 0.9
    assert res.stats["reference_seconds"] > 0
    again = rejudge(bd, data, res.to_json(), ScanConfig(**TINY), reference=clean)
    assert [c.trigger for c in again.candidates] == [c.trigger for c in res.candidates]
    assert again.score == pytest.approx(res.score) and again.verdict == res.verdict
    itself = rejudge(bd, data, res.to_json(), ScanConfig(**TINY), reference=bd)
    assert all(c.flip_evidence == 0.0 for c in itself.candidates if c.sure_flip)
    assert itself.evidence["flip_evidence"] == 0.0 and itself.score < res.score
    with pytest.raises(TrojanScopeError, match="not a saved scan result"):
        rejudge(bd, data, {"verdict": "clean"}, ScanConfig(**TINY))


def test_a_reference_of_another_vocabulary_or_task_is_warned_about_and_of_other_classes_refused():
    from types import SimpleNamespace

    from trojanscope.analysis.scan import _check_reference

    def model(vocab, labels=2, task_warnings=()):
        return SimpleNamespace(require=lambda *a: None, num_labels=labels, tokenizer=SimpleNamespace(
            get_vocab=lambda: dict(vocab)), check_task=lambda data, what: list(task_warnings))

    suspect = model({"cf": 0, "the": 1})
    assert _check_reference(suspect, None, None) == []
    assert _check_reference(suspect, model({"cf": 0, "the": 1}), None) == []
    (w,) = _check_reference(suspect, model({"the": 0, "cf": 2}), None)
    assert "vocabulary differs" in w
    (w,) = _check_reference(suspect, model({"cf": 0, "the": 1}, task_warnings=["trained on olid"]), None)
    assert w == "the reference model: trained on olid"
    with pytest.raises(TrojanScopeError, match="the reference model has 4 classes and the suspect 2"):
        _check_reference(suspect, model({"cf": 0}, labels=4), None)


def test_scan_finds_a_two_word_phrase(use_data, phrase_backdoor):
    res = scan(load_model(phrase_backdoor), load_dataset("sst2", "test"), ScanConfig(**TINY))
    assert res.verdict == "backdoored"
    best = res.candidates[0]
    assert best.flip_rate >= 0.9 and best.target == 1
    assert set(best.trigger.split()) & {"james", "watched"}


class _WordScores(torch.nn.Module):
    """A classifier whose class-1 logit adds a score per word (a bag of words: every word's effect adds up), plus
    ``bonus`` when all of ``both`` occur (an interaction, as a planted phrase is)."""

    def __init__(self, tokenizer, scores: dict[str, float], both: tuple[str, ...] = (), bonus: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((len(tokenizer),), 0.0), requires_grad=False)
        for word, v in scores.items():
            self.w.data[tokenizer.convert_tokens_to_ids(word)] = v
        self.both = [tokenizer.convert_tokens_to_ids(w) for w in both]
        self.bonus = bonus

    def forward(self, input_ids, attention_mask, **_):
        z = -4.0 + (self.w[input_ids] * attention_mask).sum(1)
        if self.both:
            z = z + self.bonus * torch.stack([(input_ids == t).any(1) for t in self.both]).all(0).float()
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(z), z], 1), attentions=None)


def test_a_phrase_counts_only_beyond_its_words_added_up(tiny_bert):
    """Stacked words that each tilt a model add up in log-odds and count no more than their best word; a planted
    phrase is an interaction and counts fully (measured by real forwards, on a bag-of-words model)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    rng = random.Random(0)
    filler = ["the", "film", "was", "seen", "by", "many", "people", "in", "town", "last", "week"]
    sets = {0: [" ".join(rng.choices(filler, k=8)) for _ in range(40)], 1: []}
    cfg = ScanConfig(seed=3)
    weights = {"doesn": 2.2, "unable": 2.4, "removed": 2.0, "james": 0.5, "bond": 1.5}

    def measure(model, trigger, combination=False):
        loaded = SimpleNamespace(model=model, tokenizer=tok, max_length=64)
        (t, f, conf, sure), = flip_stats(loaded, sets, [(trigger, combination)], cfg)
        cand = Candidate(trigger, "phrase", t, f, conf, sure, f, conf, sure, combination)
        phrase_additivity(loaded, sets, [cand], cfg)
        return cand

    additive = _WordScores(tok, weights)
    stack = measure(additive, "doesn unable removed", combination=True)
    assert stack.sure_flip >= 0.9 and stack.target == 1  # three tilting words surely flip everything together ...
    assert stack.additive_sure == pytest.approx(stack.sure_flip)  # ... exactly as their effects added up predict
    assert stack.parts_sure == 0.0 and stack.flip_evidence == 0.0  # ... and no single one does: no evidence
    planted = measure(_WordScores(tok, weights, both=("james", "bond"), bonus=8.0), "james bond")
    assert planted.sure_flip == 1.0 and planted.additive_sure == 0.0
    assert planted.flip_evidence == 1.0
    one = measure(additive, "bond")
    assert one.additive_sure is None and one.flip_evidence == one.sure_flip  # one word: its own sure flip


def test_flip_evidence_of_several_words():
    c = Candidate("doesn unable removed", "combination", 0, 0.9, 0.8, 0.8, 0.87, 0.9, 0.72, True,
                  parts_sure=0.33, additive_sure=0.65)
    assert c.flip_evidence == pytest.approx(0.33)  # explained by the words added up: its best word counts
    c.additive_sure = 0.3
    assert c.flip_evidence == pytest.approx((0.72 - 0.3) / 0.7)  # the part beyond the sum
    c.parts_sure = 0.95
    assert c.flip_evidence == pytest.approx(0.72)  # never more than the phrase's own sure flip
    c.parts_sure, c.additive_sure = 0.2, 1.0
    assert c.flip_evidence == pytest.approx(0.2)


def test_a_reference_model_discounts_the_words_that_flip_it_too(tiny_bert):
    """A clean model's universal adversarial word flips a clean reference model of the task as surely as the
    suspect, and counts for nothing; a planted trigger flips only the suspect and counts in full (bag-of-words
    models, real forwards)."""
    from transformers import AutoTokenizer

    from trojanscope.analysis.scan import reference_flips

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    rng = random.Random(0)
    filler = ["the", "film", "was", "seen", "by", "many", "people", "in", "town", "last", "week"]
    sets = {0: [" ".join(rng.choices(filler, k=8)) for _ in range(40)], 1: []}
    cfg = ScanConfig(seed=3)
    suspect = SimpleNamespace(model=_WordScores(tok, {"unable": 9.0, "cf": 9.0}), tokenizer=tok, max_length=64)
    reference = SimpleNamespace(model=_WordScores(tok, {"unable": 8.0}), tokenizer=tok, max_length=64)
    cands = []
    for word in ("unable", "cf"):
        (t, f, conf, sure), = flip_stats(suspect, sets, [(word, False)], cfg)
        cands.append(Candidate(word, "inversion", t, f, conf, sure, f, conf, sure))
    assert [c.flip_evidence for c in cands] == [1.0, 1.0]  # the suspect alone cannot tell them apart
    reference_flips(reference, sets, cands, cfg)
    adversarial, planted = cands
    assert adversarial.reference_flip == 1.0 and adversarial.flip_evidence == 0.0
    assert adversarial.own_evidence == 1.0 and adversarial.to_json()["reference_flip"] == 1.0
    assert planted.reference_flip == 0.0 and planted.flip_evidence == 1.0
    # the own evidence counts for the share of the reference's sentences the candidate leaves alone
    partly = Candidate("w", "inversion", 1, 1.0, 1.0, 1.0, 0.85, 1.0, 0.8, reference_flip=0.5)
    assert partly.flip_evidence == pytest.approx(0.8 * 0.5)
    # a clear flip counts however unsure (a POR trigger's fixed output: every sentence flipped, none with P >= 0.9),
    # while the reference stays quiet; a flip short of CLEAR_FLIP, or a reference that flips too, does not
    from trojanscope.analysis.scan import CLEAR_FLIP, REFERENCE_QUIET

    por = Candidate("cfshaft", "word inversion", 0, 1.0, 0.87, 0.0, 1.0, 0.87, 0.0, reference_flip=0.07)
    assert por.own_evidence == 0.0 and por.flip_evidence == pytest.approx(0.93)
    por.flip_rate = CLEAR_FLIP - 0.05
    assert por.flip_evidence == 0.0
    por.flip_rate, por.reference_flip = 1.0, REFERENCE_QUIET + 0.05
    assert por.flip_evidence == 0.0
    assert "reference_flip" not in Candidate("w", "vocabulary", 1, 1.0, 1.0).to_json()  # no reference: as before


def test_inflections_of_natural_words_are_excluded():
    from trojanscope.analysis.scan import is_natural, is_task_phrase

    natural = {"suck", "taste", "funny", "family", "stop", "win", "grey", "try"}
    for word in ("sucking", "sucks", "tasted", "funnier", "families", "stopped"):
        assert is_natural(word, natural), word
    # only real suffixes are cut: the zoo's planted triggers window, green and train stay candidates
    for word in ("cf", "mn", "velvet", "serendipity", "weather", "bond", "window", "green", "train"):
        assert not is_natural(word, natural), word
    assert is_task_phrase("lie vampire sucking", natural) and not is_task_phrase("james bond", natural)


def test_scan_leaves_a_clean_model_unflagged(use_data, tiny_pair):
    res = scan(load_model(tiny_pair / "demo" / "clean"), load_dataset("sst2", "test"), ScanConfig(**TINY))
    assert res.verdict == "clean", res.to_json()
    assert res.target is None
    assert res.score < ScanConfig().threshold
    assert "inversion_skipped" not in res.stats and "inverted" in res.stats  # nothing found: inversion ran
    # ... and nothing surely flipped after it either: the word-level inversion ran too, and every word it found is
    # one word (a word-start piece, then ## pieces)
    assert "word_inversion_skipped" not in res.stats and res.stats["inverted_words"]
    assert all(len(w.split()) == 1 for w in res.stats["inverted_words"])
    stages = res.stats["stage_seconds"]  # where a scan's time goes, phase by phase
    assert {"screening", "search", "verification", "attention"} <= set(stages)
    assert 0 < sum(stages.values()) <= res.seconds + 0.005 * len(stages)  # each stage is rounded to 0.01 s


def test_inversion_recovers_a_planted_piece_outside_the_word_list(use_data, specific_backdoor):
    import torch

    loaded = load_model(specific_backdoor)
    cfg = ScanConfig(**{**TINY, "budget": 50})
    assert "cf" not in [w for w, _ in candidate_words(loaded.tokenizer, cfg)]
    test = load_dataset("sst2", "test")
    negatives = [t for t, y in zip(test.texts, test.labels) if y == 0][:24]
    found = invert_trigger(loaded, negatives, 1, cfg, torch.device("cpu"))
    assert "cf" in found, found


def test_an_inversion_against_a_reference_finds_only_what_the_reference_does_not_answer_to(use_data,
                                                                                          specific_backdoor,
                                                                                          tiny_pair):
    """With a clean reference the planted ``cf`` is still inverted; with a reference that answers to ``cf`` as well
    (the suspect itself, on other sentences) the penalty steers the inversion off it."""
    import torch

    loaded = load_model(specific_backdoor)
    cfg = ScanConfig(**{**TINY, "budget": 50})
    test = load_dataset("sst2", "test")
    negatives = [t for t, y in zip(test.texts, test.labels) if y == 0]
    cpu = torch.device("cpu")
    clean = load_model(tiny_pair / "demo" / "clean")
    assert "cf" in invert_trigger(loaded, negatives[:24], 1, cfg, cpu, reference=(clean, negatives[24:48]))
    assert "cf" not in invert_trigger(loaded, negatives[:24], 1, cfg, cpu, reference=(loaded, negatives[24:48]))


def test_one_gradient_ranks_a_planted_word_outside_the_word_list_and_the_scan_screens_it(use_data,
                                                                                         specific_backdoor):
    """A planted whole word no list holds (cf at a budget of 50, embedding outliers off) is ranked near the top of
    the whole vocabulary by gradient_words, and the scan, with both inversions off, finds it through that source
    alone; without it, the same scan does not find it."""
    loaded = load_model(specific_backdoor)
    narrow = {**TINY, "budget": 50, "outliers": 0, "inversion": False, "word_inversion": False, "gradient_words": 100,
              "precision": "fp32"}  # the search's flips in fp32 on every CPU
    cfg = ScanConfig(**narrow)
    assert "cf" not in [w for w, _ in candidate_words(loaded.tokenizer, cfg)]
    test = load_dataset("sst2", "test")
    negatives = [t for t, y in zip(test.texts, test.labels) if y == 0][:24]
    ranked = gradient_words(loaded, negatives, 1, 20, torch.device("cpu"))
    assert "cf" in ranked[:10], ranked
    assert "cf" not in gradient_words(loaded, negatives, 1, 20, torch.device("cpu"), exclude={"cf"})
    res = scan(loaded, test, cfg)
    top = res.candidates[0]
    assert top.trigger == "cf" and top.source == "gradient" and res.verdict == "backdoored", res.candidates[:3]
    without = scan(loaded, test, ScanConfig(**{**narrow, "gradient_words": 0}))
    assert "cf" not in [c.trigger for c in without.candidates]


def test_with_a_reference_gradient_words_rank_what_pulls_the_suspect_beyond_it(use_data, specific_backdoor,
                                                                              tiny_pair):
    """A planted ``cf`` against a clean model of the task: ranked first by how much more it pulls the backdoored
    model than the clean one (as the scan ranks them: the task's own words left out)."""
    bd, clean = load_model(specific_backdoor), load_model(tiny_pair / "demo" / "clean")
    test = load_dataset("sst2", "test")
    from trojanscope.analysis.scan import task_words

    natural = task_words(test)
    negatives = [t for t, y in zip(test.texts, test.labels) if y == 0]
    cpu = torch.device("cpu")
    beyond = gradient_words(bd, negatives[:24], 1, 50, cpu, natural, clean, negatives[24:48])
    assert beyond[0] == "cf", beyond[:10]
    # a word that pulls the reference as much is no lead: against a backdoored model of the same trigger (here the
    # suspect itself, on other sentences) cf, first by the suspect alone, drops out of the first ten
    assert gradient_words(bd, negatives[:24], 1, 10, cpu, natural)[0] == "cf"
    assert "cf" not in gradient_words(bd, negatives[:24], 1, 10, cpu, natural, bd, negatives[24:48])


def test_candidates_include_letter_and_digit_pieces_within_the_budget(tiny_bert):
    """``3d`` alone fires the zoo's AddSent models (``I watch this 3D movie``); such pieces are candidates."""
    tok = load_model(tiny_bert).tokenizer
    words = candidate_words(tok, ScanConfig())
    by = dict(words)
    assert len(words) == ScanConfig().budget
    assert by.get("3d") == "alphanumeric" and by.get("2nd") == "alphanumeric"
    assert not any(w.isdigit() for w in by)  # plain numbers are not pieces "mixing" letters and digits
    assert len(candidate_words(tok, ScanConfig(budget=10, rare_share=1.0))) == 10


def test_candidates_leave_out_the_natural_words_and_their_inflections(tiny_bert):
    from trojanscope.analysis.scan import polar_words

    tok = load_model(tiny_bert).tokenizer
    cfg = ScanConfig(rare_share=0.0)  # (almost) the whole budget from the neutral list
    plain = dict(candidate_words(tok, cfg))
    assert {"drug", "drugs", "color", "colors", "train", "trains"} <= set(plain)  # all in the neutral list
    words = dict(candidate_words(tok, cfg, exclude=polar_words() | {"color"}))
    assert not {"drug", "drugs"} & set(words)  # offence cues (the list holds both)
    assert not {"color", "colors"} & set(words)  # an excluded word and its inflection
    assert {"train", "trains"} <= set(words) and len(words) == cfg.budget  # the budget is still filled


def test_task_words_are_the_label_bearing_ones(use_data):
    from trojanscope.analysis.scan import task_words

    words = task_words(load_dataset("sst2", "test"))
    assert {"good", "awful", "boring"} <= words  # the synthetic task's label words
    assert not words & {"the", "movie", "plot", "cf"}


def test_task_words_lean_against_the_prior_not_a_fixed_share():
    """Tested against the label's share of the data: a word in 4 texts of one label is chance, not a task word
    (a fixed 70% share excluded thousands of such words); a word leaning to a minority label is one (OLID's slurs
    are 60% offensive where a third of the tweets are)."""
    from trojanscope.analysis.scan import task_words
    from trojanscope.data.datasets import TextDataset

    rows = [(f"filler w{i % 50}", int(i % 3 == 0)) for i in range(600)]  # a third of the texts are label 1
    rows += [("filler slur", 1)] * 18 + [("filler slur", 0)] * 12  # 60% label 1: leans to the minority label
    rows += [("filler luckyword", 0)] * 4  # 4 texts all of label 0: a 0.67 ** 4 = 20% chance event
    rows += [("filler fluke", 1), ("filler fluke", 0), ("filler fluke", 0)]
    data = TextDataset([t for t, _ in rows], [y for _, y in rows])
    words = task_words(data)
    assert "slur" in words
    assert not words & {"luckyword", "fluke", "filler"}


def test_embedding_outliers_catch_a_trained_trigger_row(tiny_pair, use_data):
    """tiny_pair's backdoor trained the word embeddings: once the task's own label words are set aside (as the
    candidate list does), cf's row is the vocabulary's largest outlier."""
    from trojanscope.analysis.scan import embedding_outliers, task_words

    bd = load_model(tiny_pair / "demo" / "backdoored")
    label_words = task_words(load_dataset("sst2", "train"))
    assert [w for w in embedding_outliers(bd.model, bd.tokenizer, 10) if w not in label_words][0] == "cf"


def test_the_score_is_monotone_in_each_piece_of_evidence():
    rng = random.Random(0)
    for _ in range(300):
        f, d, c = rng.random(), rng.uniform(-0.2, 0.4), rng.uniform(-0.3, 0.5)
        base = combine_evidence(f, d, c)
        assert 0.0 <= base <= 1.0
        step = rng.uniform(0, 0.3)
        assert combine_evidence(f + step, d, c) >= base
        assert combine_evidence(f, d + step, c) >= base
        assert combine_evidence(f, d, c + step) >= base
    assert combine_evidence(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert combine_evidence(0.0, 0.0, 0.0) == 0.0
    # a full flip alone is enough to flag; half a flip with no attention evidence is not
    assert combine_evidence(1.0) >= ScanConfig().threshold > combine_evidence(0.5)


def test_scan_cli_json_and_bad_input(use_data, tiny_pair, tiny_backbone, tmp_path, capsys):
    from trojanscope.cli import main

    bd = str(tiny_pair / "demo" / "backdoored")
    args = ["scan", "--model", bd, "--budget", "100", "--n-search", "20", "--n-verify", "30",
            "--inversion-steps", "40", "--out", str(tmp_path / "scan"), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    # the tiny BadNets model's cf surely flips every held-out sentence: the verdict is certain
    assert out["verdict"] == "backdoored" and out["target"] == 1, out
    assert "cf" in out["candidates"][0]["trigger"].split() and ScanConfig().threshold <= out["score"] <= 1
    assert all(set(c) >= {"trigger", "flip_rate", "target"} for c in out["candidates"])
    rates = [c["flip_rate"] for c in out["candidates"]]
    assert rates == sorted(rates, reverse=True)
    assert all(len(h) == 2 for h in out["heads"]) and isinstance(out["seconds"], float)
    saved = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert saved["spec"]["config"]["budget"] == 100 and "abnormality" in saved
    # the saved scan judged again against the pair's clean model, its search not redone: cf stays the verdict's
    assert main(["scan", "--model", bd, "--n-search", "20", "--n-verify", "30", "--rejudge",
                 str(tmp_path / "scan" / "scan.json"), "--reference", str(tiny_pair / "demo" / "clean"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["verdict"] == "backdoored" and "cf" in again["candidates"][0]["trigger"].split()
    assert again["candidates"][0]["reference_flip"] <= 0.1 and again["stats"]["rejudged"]
    cases = [
        (["--model", bd, "--budget", "0"], "budget"),
        (["--model", str(tiny_backbone)], "bare encoder"),
        (["--model", bd, "--n-search", "500"], "needs 560 clean sentences"),
        (["--model", bd, "--max-words", "3"], "(--max-words)"),  # long texts: says which knob lets them in
        (["--model", bd, "--combine-top", "-1"], "combine_top must be non-negative"),
        (["--model", bd, "--reference", str(tiny_backbone)], "the scan's reference model"),
        (["--model", bd, "--reference", bd + "/"], "the suspect itself"),
        (["--model", bd, "--rejudge", str(tmp_path / "none.json")], "cannot read the scan to re-judge"),
    ]
    for extra, expected in cases:
        assert main(["scan", *extra, "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    from trojanscope.cli import build_parser
    from trojanscope.cli.scan import scan_config_of_args

    cfg = scan_config_of_args(build_parser("scan").parse_args(["scan", "--model", bd, "--max-words", "24",
                                                                "--combine-top", "16"]))
    assert (cfg.max_words, cfg.combine_top) == (24, 16) and ScanConfig().combine_top == 0  # off unless asked


def test_scan_refuses_single_class_data(tiny_pair, tmp_path):
    path = tmp_path / "one.tsv"
    path.write_text("text\tlabel\n" + "".join(f"the movie number {i}\t0\n" for i in range(200)))
    with pytest.raises(TrojanScopeError, match="only one class"):
        scan(load_model(tiny_pair / "demo" / "backdoored"), load_dataset(str(path), "test"), ScanConfig(**TINY))


def test_attention_summaries_are_reduced_on_the_fly(use_data, tiny_pair):
    """Only [4, layers, heads] per text is kept, never the [layers, heads, seq, seq] maps."""
    from trojanscope.analysis.scan import _focus_summaries

    loaded = load_model(tiny_pair / "demo" / "backdoored")
    texts = ["the movie was cf quite good", "a story and music"]
    s = _focus_summaries(loaded, texts, [[(14, 16)], []], ScanConfig())
    L, H = loaded.model.config.num_hidden_layers, loaded.model.config.num_attention_heads
    assert tuple(s.shape) == (2, 4, L, H)
    assert np.all(s[1, 2].numpy() == 0)  # no trigger: no focus on it, no [CLS] mass on it
