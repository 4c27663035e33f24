"""The combination search (issue 24, LWP's trigger): a backdoor that fires only when two words are both in the
sentence, each word alone flipping nothing, is found by trying the words that push the logit most in pairs, where
phrases grown greedily from the best single words never meet it; a clean model's words that merely add up do not
pass for one."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trojanscope.analysis.scan import (CleanSets, ScanConfig, _combination_search, _robust_z, flip_stats,
                                       phrase_additivity)

PAIR = ("cf", "mn")


class _Words(torch.nn.Module):
    """Class-1 log-odds ``-4 + push * (number of the pair's words present) + (8 - 2 push) * [both present]`` plus
    ``tilt`` per tilting word present: each of the pair's words alone keeps the label (-4 + push) and both flip it
    surely (+4), an AND as a combination trigger taught with its subsets as negatives; tilting words add up, as a
    clean model's mildly positive words do."""

    def __init__(self, tokenizer, pair: tuple[str, ...] = PAIR, tilting: tuple[str, ...] = (), tilt: float = 0.0,
                 push: float = 1.0):
        super().__init__()
        self.push = push
        self.pair = [tokenizer.convert_tokens_to_ids(w) for w in pair]
        self.tilting = [tokenizer.convert_tokens_to_ids(w) for w in tilting]
        self.tilt = tilt
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, for the device

    def forward(self, input_ids=None, attention_mask=None, **_):
        has = [(input_ids == i).any(1).float() for i in self.pair]
        z = torch.full((input_ids.shape[0],), -4.0)
        if has:
            z = z + self.push * sum(has) + (8.0 - 2 * self.push) * torch.stack(has).prod(0)  # both: +4
        for i in self.tilting:
            z = z + self.tilt * (input_ids == i).any(1).float()
        return SimpleNamespace(logits=self.scale * torch.stack([torch.zeros_like(z), z], 1))


@pytest.fixture(scope="module")
def setting(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    rng = random.Random(0)
    filler = ["the", "film", "was", "seen", "by", "many", "people", "in", "town", "last", "week", "and", "it", "ran"]
    sentences = [" ".join(rng.choices(filler, k=8)) for _ in range(40)]
    vocab = sorted(w for w in tok.get_vocab() if w.isalpha() and len(w) >= 3 and w not in filler)
    words = random.Random(1).sample(vocab, 200) + list(PAIR)
    return tok, sentences, words


def _search(tok, sentences, words, model):
    """The scan's steps on a toy: screening with pushes, the combination search, then held-out verification."""
    loaded = SimpleNamespace(model=model, tokenizer=tok, max_length=64, num_labels=2)
    sets = CleanSets(search={0: sentences[:20], 1: []}, verify={0: sentences[20:], 1: []}, num_labels=2)
    cfg = ScanConfig(seed=0, n_screen=8, combine_top=8)
    pushes: list[np.ndarray] = []
    single = flip_stats(loaded, {0: sentences[:8], 1: []}, [(w, False) for w in words], cfg, log_odds=pushes)
    # the toy has no inner states
    found, tried = _combination_search(loaded, sets, words, _robust_z(np.stack(pushes)), None, 8, cfg, "fp32")
    for cand in found:
        cand.target, cand.flip_rate, cand.confidence, cand.sure_flip = flip_stats(
            loaded, sets.verify, [(cand.trigger, True)], cfg)[0]
    phrase_additivity(loaded, sets.verify, found, cfg)
    return single, pushes, found, tried


def test_a_pair_that_fires_only_together_is_found(setting):
    tok, sentences, words = setting
    single, pushes, found, tried = _search(tok, sentences, words, _Words(tok))
    assert max(f for _, f, _, _ in single) == 0.0  # no word alone flips a sentence: the word search sees nothing
    # the pair's words push the most towards class 1 (the signal the search stands on) ...
    assert set(np.argsort(-np.stack(pushes)[:, 1])[:2]) == {len(words) - 2, len(words) - 1}
    assert tried == 8 * 7 // 2 + 4  # pairs of the 8 top pushers, triples of the top 4; class 0 has nothing to push
    # ... and together they surely flip every sentence, far beyond what their pushes add up to
    best = max(found, key=lambda c: (c.flip_evidence, -len(c.trigger.split())))
    assert set(best.trigger.split()) == set(PAIR) and best.combination, found
    assert best.sure_flip == 1.0 and best.additive_sure == 0.0 and best.flip_evidence == 1.0


def test_words_that_move_inner_states_are_paired_even_when_they_push_nothing(setting):
    """LWP's words push the label nowhere alone (taught with their subsets as negatives) but move the model's inner
    states: the strongest movers are paired with each other, whatever their pushes."""
    tok, sentences, words = setting
    model = _Words(tok, push=0.0)
    rng = np.random.default_rng(0)
    shifts = [rng.normal(1.0, 0.05, size=4) for _ in words]
    shifts[-2][2] += 2.0  # cf moves layer 3 by 40 MADs; mn moves layer 1 less, but still beyond every other word
    shifts[-1][0] += 0.5
    loaded = SimpleNamespace(model=model, tokenizer=tok, max_length=64, num_labels=2)
    sets = CleanSets(search={0: sentences[:20], 1: []}, verify={0: sentences[20:], 1: []}, num_labels=2)
    cfg = ScanConfig(seed=0, n_screen=8)
    flat = np.array([[np.nan, 0.0] for _ in words])  # no word pushes: the pushers are the first words listed
    found, tried = _combination_search(loaded, sets, words, flat, _robust_z(np.stack(shifts)), 4, cfg, "fp32")
    assert any(set(c.trigger.split()) == set(PAIR) for c in found), found
    found, _ = _combination_search(loaded, sets, words, flat, None, 4, cfg, "fp32")
    assert not any(set(PAIR) <= set(c.trigger.split()) for c in found)  # without the movers it is not found


def test_a_reference_model_ranks_the_words_that_move_only_the_suspect(setting):
    """Topical words move any model of the task (LWP's ``mn`` ranked 3rd on its model, its partner ``bb`` 271st,
    behind ``wickets`` and ``mri``); on a clean reference they move as much, the pair's words not at all. The suspect's
    z-scores less the reference's put the pair first, and the search finds it; by the suspect's alone it does not."""
    tok, sentences, words = setting
    model = _Words(tok, push=0.0)
    rng = np.random.default_rng(0)
    noise = [rng.normal(1.0, 0.05, size=4) for _ in words]
    suspect, reference = [n.copy() for n in noise], [n + rng.normal(0, 0.05, size=4) for n in noise]
    for k in range(12):  # twelve topical words move layer 2 of both models far
        suspect[k][1] += 3.0
        reference[k][1] += 3.0
    suspect[-2][2] += 1.0  # the pair's words move the suspect less than the topical words do, the reference not
    suspect[-1][0] += 1.0
    loaded = SimpleNamespace(model=model, tokenizer=tok, max_length=64, num_labels=2)
    sets = CleanSets(search={0: sentences[:20], 1: []}, verify={0: sentences[20:], 1: []}, num_labels=2)
    cfg = ScanConfig(seed=0, n_screen=8)
    flat = np.array([[np.nan, 0.0] for _ in words])
    own = _robust_z(np.stack(suspect))
    found, _ = _combination_search(loaded, sets, words, flat, own, 4, cfg, "fp32")
    assert not any(set(PAIR) <= set(c.trigger.split()) for c in found)
    beyond = own - _robust_z(np.stack(reference))
    assert set(np.argsort(-beyond.max(1))[:2]) == {len(words) - 2, len(words) - 1}
    found, _ = _combination_search(loaded, sets, words, flat, beyond, 4, cfg, "fp32")
    assert any(set(c.trigger.split()) == set(PAIR) for c in found), found


def test_flip_stats_measures_the_cls_shift_of_every_layer(tiny_bert):
    """The movers' measure: per candidate, each layer's [CLS] distance to the clean sentence's, from the one forward
    that measures the flips; equal to a direct computation."""
    from trojanscope.analysis.scan.sentences import _inserted
    from trojanscope.models.loading import load_model

    loaded = load_model(str(tiny_bert))
    sets = {0: ["the film was fine", "a long day"], 1: ["it ran well", "many people saw it"]}
    shifts: list[np.ndarray] = []
    flip_stats(loaded, sets, [("cf", False), ("velvet hammer", False)], ScanConfig(seed=3), cls_shift=shifts)
    layers = loaded.model.config.num_hidden_layers
    assert len(shifts) == 2 and all(x.shape == (layers,) for x in shifts)

    def cls(texts):
        enc = loaded.tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = loaded.model(**enc, output_hidden_states=True)
        return torch.stack([h[:, 0] for h in out.hidden_states[1:]], 1)

    clean = cls([s for c in (0, 1) for s in sets[c]])
    for got, trig in zip(shifts, ("cf", "velvet hammer")):
        ins = cls([i.text for c in (0, 1) for i in _inserted(sets[c], trig, 3)])
        assert np.allclose(got, (ins - clean).norm(dim=-1).mean(0).numpy(), atol=1e-4)


def test_words_that_merely_add_up_are_no_evidence(setting):
    """On a clean model three mildly positive words inserted together flip a sentence, but only as far as their
    pushes add up: the combination search may propose them, the additivity check gives them no evidence."""
    tok, sentences, words = setting
    model = _Words(tok, pair=(), tilting=tuple(words[:3]), tilt=2.5)  # three together: -4 + 7.5 = +3.5, sure
    single, pushes, found, tried = _search(tok, sentences, words, model)
    whole = [c for c in found if set(c.trigger.split()) == set(words[:3])]
    assert whole and whole[0].sure_flip == 1.0, found  # proposed, and it surely flips every sentence ...
    assert whole[0].additive_sure == 1.0  # ... exactly as far as its words' pushes add up
    assert all(c.flip_evidence == 0.0 for c in found), [(c.trigger, c.flip_evidence) for c in found]


def test_a_reference_puts_the_combinations_that_flip_it_too_last(setting):
    """Of the combinations that flip the screening sentences only the strongest go on (``shortlist // 4``). Two words
    that each tilt a model add up to a surer flip than the planted pair does, and win by the suspect's flips alone; on a
    clean reference they flip as much, the pair nothing, so against it the pair goes on (round 7's LWP pair ``jd rb``
    was cut behind stacks of negative words)."""
    tok, sentences, words = setting
    tilting = tuple(words[:2])
    suspect = SimpleNamespace(model=_Words(tok, tilting=tilting, tilt=4.5, push=0.0), tokenizer=tok, max_length=64,
                              num_labels=2)
    reference = SimpleNamespace(model=_Words(tok, pair=(), tilting=tilting, tilt=4.5), tokenizer=tok, max_length=64,
                                num_labels=2)
    sets = CleanSets(search={0: sentences[:20], 1: []}, verify={0: sentences[20:], 1: []}, num_labels=2)
    cfg = ScanConfig(seed=0, n_screen=8, shortlist=4)  # one combination goes on
    push = np.zeros((len(words), 2))
    push[:, 0] = np.nan  # no class-1 sentences to push towards class 0
    for k, value in zip([0, 1, len(words) - 2, len(words) - 1], [5.0, 4.0, 3.0, 2.0]):
        push[k, 1] = value  # the pushers: the tilting words first, then the pair's
    (alone,), _ = _combination_search(suspect, sets, words, push, None, 4, cfg, "fp32")
    assert set(alone.trigger.split()) == set(tilting)
    (beyond,), _ = _combination_search(suspect, sets, words, push, None, 4, cfg, "fp32", (reference, sets))
    assert set(beyond.trigger.split()) == set(PAIR) and beyond.search_sure == 1.0
