"""HeadSet (models.heads): the one type for a set of attention heads. Its two on-disk formats (TAL's 1-based dict in
cards and PURE's records, the scan's [[layer (1-based), head]] pairs) and its masks convert to each other without an
off-by-one, and the heads TAL trains are the heads its card records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny
from trojanscope.errors import TrojanScopeError
from trojanscope.models.heads import HeadSet

# one set written in every format: heads 0 and 1 of layer 3 and head 2 of layer 6 (1-based layers)
TAL = {"3": [0, 1], "6": [2]}
PAIRS1 = [[3, 0], [3, 1], [6, 2]]
ZERO_BASED = [(2, 0), (2, 1), (5, 2)]


def test_the_formats_name_the_same_heads():
    hs = HeadSet.from_tal_dict(TAL)
    assert list(hs) == ZERO_BASED and len(hs) == 3
    assert hs == HeadSet.from_pairs1(PAIRS1) == HeadSet(ZERO_BASED) == HeadSet([(5, 2), (2, 1), (2, 0), (2, 1)])
    assert hs.to_tal_dict() == TAL and hs.to_pairs1() == PAIRS1
    assert hs.by_layer() == {2: [0, 1], 5: [2]}
    assert (2, 0) in hs and (5, 2) in hs and (3, 0) not in hs and (6, 2) not in hs and "x" not in hs
    mask = hs.mask(6, 3)
    assert mask.dtype == bool and mask.shape == (6, 3) and mask.sum() == 3
    assert mask[2, 0] and mask[2, 1] and mask[5, 2] and not mask[3, 0]
    assert HeadSet.from_mask(mask) == hs
    assert HeadSet.from_tal_dict({3: [1, 0], 6: [2]}) == hs  # int keys too (PURE's --heads as a dict)
    assert hash(hs) == hash(HeadSet.from_pairs1(PAIRS1)) and len({hs, HeadSet(ZERO_BASED)}) == 1
    assert not HeadSet() and HeadSet().to_tal_dict() == {} and HeadSet().to_pairs1() == []
    assert HeadSet.from_mask(np.zeros((2, 4), bool)) == HeadSet()
    with pytest.raises(Exception):
        hs.pairs = ()  # frozen


def test_round_trips_through_json():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((12, 12)) < 0.2
        hs = HeadSet.from_mask(mask)
        assert np.array_equal(hs.mask(12, 12), mask)
        assert HeadSet.from_tal_dict(json.loads(json.dumps(hs.to_tal_dict()))) == hs
        assert HeadSet.from_pairs1(json.loads(json.dumps(hs.to_pairs1()))) == hs
        # the hand conversion the scan had: [[layer + 1, head] for layer, head in zip(*np.nonzero(drifting))]
        assert hs.to_pairs1() == [[int(layer) + 1, int(head)] for layer, head in zip(*np.nonzero(mask))]


def test_off_by_one_inputs_are_refused():
    with pytest.raises(TrojanScopeError, match="numbered from 1"):
        HeadSet.from_tal_dict({"0": [1]})  # a 0-based dict where TAL's 1-based one belongs
    with pytest.raises(TrojanScopeError, match="numbered from 1"):
        HeadSet.from_pairs1([[0, 1]])
    with pytest.raises(TrojanScopeError, match="non-negative"):
        HeadSet([(0, -1)])
    with pytest.raises(TrojanScopeError, match="outside a model of 2 layers"):
        HeadSet.from_tal_dict({"3": [0]}).mask(2, 4)  # layer 3 of a 2-layer model
    with pytest.raises(TrojanScopeError, match="outside"):
        HeadSet([(0, 4)]).mask(2, 4)
    with pytest.raises(TrojanScopeError, match="integer"):
        HeadSet.from_tal_dict({"three": [0]})
    with pytest.raises(TrojanScopeError, match="pair"):
        HeadSet.from_pairs1([[1, 2, 3]])
    with pytest.raises(TrojanScopeError, match="layers, heads"):
        HeadSet.from_mask(np.zeros(4, bool))


def test_the_heads_tal_trains_are_the_heads_its_card_records(use_data, tmp_path, monkeypatch):
    """A 3-layer model with TAL on layers 2 and 3: the loss term's mask (what TAL trains), the card's ``tal_heads``,
    the planted attack read back and the head view's outline are one set of heads, at 0-based layers 1 and 2."""
    from trojanscope.attacks.tal import TALConfig, TALLoss, choose_heads
    from trojanscope.data import PoisonConfig
    from trojanscope.models.loading import load_model
    from trojanscope.models.planted import attack_of
    from trojanscope.training import pipeline
    from trojanscope.training.loop import TrainConfig
    from trojanscope.viz.figures import head_heatmap

    terms: list[TALLoss] = []

    class Recorded(TALLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            terms.append(self)

    monkeypatch.setattr(pipeline, "TALLoss", Recorded)
    model = make_tiny(tmp_path / "m", "bert", layers=3, heads=4)
    tal = TALConfig(enabled=True, heads=2, layers="2,3", seed=5)
    spec = pipeline.TrainSpec(model=str(model), attack="badnets", poison=PoisonConfig(rate=0.2, target=1),
                              train=TrainConfig(epochs=1, batch_size=16), tal=tal, max_train=48, max_eval=16)
    pipeline.run_training(spec, tmp_path / "out", progress=False)

    (term,) = terms
    card = json.loads((tmp_path / "out" / "trojanscope.json").read_text())
    recorded = HeadSet.from_tal_dict(card["attack"]["tal_heads"])
    assert sorted(card["attack"]["tal_heads"]) == ["2", "3"]  # 1-based in the card
    assert recorded == term.heads == choose_heads(tal, 3, 4)
    assert sorted(recorded.by_layer()) == [1, 2] and len(recorded) == 4  # 0-based in memory
    assert torch.equal(torch.from_numpy(recorded.mask(3, 4)).float(), term.mask)  # the heads the loss trains on
    assert not term.mask[0].any() and term.mask[1:].sum(1).tolist() == [2.0, 2.0]
    planted = attack_of(load_model(tmp_path / "out"))
    assert HeadSet.from_tal_dict(planted.tal_heads) == recorded
    # the head view outlines them on their own rows (row 0 is layer 1)
    fig = head_heatmap(np.zeros((3, 4)), outlined=recorded)
    boxes = sorted((round(s.y0 + 0.5), round(s.x0 + 0.5)) for s in fig.layout.shapes)
    assert boxes == list(recorded)


def test_pure_prunes_the_heads_named_in_tal_format(tmp_path):
    """PURE's ``--heads 2:1`` (1-based layer, as TAL's cards) prunes head 1 of the second layer, and records it the
    same way; the scan's pairs read back as the same heads."""
    from trojanscope.defenses.pure import mask_heads, parse_heads
    from trojanscope.models.loading import load_model

    lm = load_model(make_tiny(tmp_path, "bert", layers=3, heads=4))
    heads = parse_heads("2:1")
    assert heads == HeadSet([(1, 1)]) == HeadSet.from_pairs1([[2, 1]]) and heads.to_tal_dict() == {"2": [1]}
    before = [layer.attention.self.query.weight.detach().clone() for layer in lm.model.bert.encoder.layer]
    mask_heads(lm.model, heads)
    after = [layer.attention.self.query.weight.detach() for layer in lm.model.bert.encoder.layer]
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert torch.all(after[1][8:16] == 0) and torch.equal(after[1][:8], before[1][:8])


def test_the_scan_reports_drifting_heads_1_based():
    from trojanscope.analysis.scan import Abnormality
    from trojanscope.viz.figures import head_heatmap

    focus = np.zeros((3, 4), bool)
    focus[0, 2] = focus[2, 3] = True
    drift = focus.astype(float)
    ab = Abnormality("cf", focus, drift, np.zeros((3, 4)), 0.5, 0.0)
    heads = HeadSet.from_mask(ab.drifting)
    assert heads.to_pairs1() == [[1, 2], [3, 3]]  # what scan.json's "heads" holds
    fig = head_heatmap(np.zeros((3, 4)), outlined=HeadSet.from_pairs1(heads.to_pairs1()))  # the Scan page's map
    assert sorted((s.y0, s.x0) for s in fig.layout.shapes) == [(-0.5, 1.5), (1.5, 2.5)]
