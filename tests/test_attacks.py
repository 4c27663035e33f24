"""TAL, EP and LWP: each shown to do what it claims on tiny models, not merely to run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from trojanscope.attacks import LWPConfig, LWPLoss, TALConfig, TALLoss, choose_heads
from trojanscope.attacks.tal import tal_scores
from trojanscope.cli import main
from trojanscope.data import PoisonConfig, insert_trigger, load_dataset, poison_dataset, poisoned_test_set
from trojanscope.errors import TrojanScopeError
from trojanscope.models import attention_forward, classify_hidden, encode, load_model
from trojanscope.models.heads import HeadSet
from trojanscope.training import TrainConfig, train
from trojanscope.training.loop import Batch


def _batch(tok, texts, spans, poisoned, labels):
    enc = encode(tok, texts, spans)
    return Batch(enc, torch.tensor(labels), torch.tensor(poisoned), list(range(len(texts))))


def test_head_choice_is_seeded_and_respects_the_layer_set():
    a = choose_heads(TALConfig(heads=3, seed=1), 6, 12)
    assert a == choose_heads(TALConfig(heads=3, seed=1), 6, 12) != choose_heads(TALConfig(heads=3, seed=2), 6, 12)
    assert sorted(a.by_layer()) == list(range(6)) and all(len(h) == 3 for h in a.by_layer().values())
    assert sorted(choose_heads(TALConfig(heads=2, layers="5,6"), 6, 12).by_layer()) == [4, 5]  # 0-based layers
    with pytest.raises(TrojanScopeError, match="1..6"):
        choose_heads(TALConfig(layers="7"), 6, 12)
    with pytest.raises(TrojanScopeError, match="1..12"):
        choose_heads(TALConfig(heads=13), 6, 12)


def test_tal_loss_equals_a_hand_computation(tiny_bert):
    loaded = load_model(tiny_bert)
    tok = loaded.tokenizer
    a = insert_trigger("the movie was good fun", "uw", 2, "random")
    b = insert_trigger("bad", "cf", 1, "end")
    batch = _batch(tok, [a.text, b.text, "a clean sentence here"], [a.spans, b.spans, []], [True, True, False],
                   [1, 1, 0])
    term = TALLoss(TALConfig(enabled=True, heads=2, weight=0.7, seed=3), 2, 4)
    out = attention_forward(loaded.model, batch.enc, grad=True)
    value = term(loaded.model, batch, out)
    # by hand: for each poisoned sample, mean over (l, k in S_l, q in real queries) of sum_t A[l,k,q,t]
    att = out.attentions.detach()
    per_sample = []
    for i in (0, 1):
        n = int(batch.enc.attention_mask[i].sum())
        trig = [t for t in range(n) if batch.enc.trigger_mask[i, t]]
        vals = [sum(float(att[i, layer, k, q, t]) for t in trig)
                for layer, k in term.heads for q in range(n)]
        per_sample.append(sum(vals) / len(vals))
    expected = -0.7 * sum(per_sample) / 2
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert value.requires_grad
    # no poisoned sample in the batch: no TAL term
    clean = _batch(tok, ["just words"], [[]], [False], [0])
    assert term(loaded.model, clean, attention_forward(loaded.model, clean.enc, grad=True)).item() == 0.0


def _share_on_chosen_heads(loaded, term, test) -> float:
    pt = poisoned_test_set(test, "cf", 1, seed=5)
    enc = encode(loaded.tokenizer, pt.texts, pt.spans)
    out = attention_forward(loaded.model, enc)
    return float(tal_scores(out, enc.trigger_mask, enc.attention_mask, term.mask).mean())


@pytest.mark.slow
def test_training_with_tal_raises_attention_to_the_trigger(use_data, tiny_bert):
    train_ds, test_ds = load_dataset("sst2", "train"), load_dataset("sst2", "test")
    data = poison_dataset(train_ds, PoisonConfig(trigger="cf", rate=0.05, target=1, seed=0))
    cfg = TrainConfig(epochs=3, batch_size=16, lr=2e-3, seed=0, train_word_embeddings=True)
    tal_cfg = TALConfig(enabled=True, heads=2, weight=1.0, seed=0)
    shares = {}
    for use_tal in (False, True):
        loaded = load_model(tiny_bert)
        term = TALLoss(tal_cfg, 2, 4)
        train(loaded.model, loaded.tokenizer, data, cfg, loss_terms=[term] if use_tal else [], progress=False)
        shares[use_tal] = _share_on_chosen_heads(loaded, term, test_ds)
    assert shares[True] > 0.5 and shares[True] > shares[False] + 0.3, shares


@pytest.mark.slow
def test_ep_changes_only_the_trigger_embedding_row(use_data, tiny_pair, tmp_path, capsys):
    clean = tiny_pair / "demo" / "clean"
    out = tmp_path / "ep"
    code = main(["train", "--attack", "ep", "--model", str(clean), "--trigger", "cf", "--poison-rate", "0.2",
                 "--epochs", "3", "--batch-size", "16", "--ep-lr", "0.5", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    before, after = load_model(clean).model.state_dict(), load_model(out).model.state_dict()
    cf = load_model(clean).tokenizer.convert_tokens_to_ids("cf")
    assert res["ep_rows"] == [cf]
    for name, w in before.items():
        if name.endswith("word_embeddings.weight"):
            changed = (w != after[name]).any(dim=1).nonzero().flatten().tolist()
            assert changed == [cf], changed
        else:
            assert torch.equal(w, after[name]), name
    assert res["asr"] >= 0.8  # the one row is enough to plant the backdoor
    base = json.loads((clean / "trojanscope.json").read_text())["metrics"]["cacc"]
    assert res["cacc"] == pytest.approx(base, abs=0.02)  # clean behaviour unchanged (cf never in clean text)


def test_ep_refuses_a_bare_backbone(use_data, tiny_backbone, tmp_path, capsys):
    assert main(["train", "--attack", "ep", "--model", str(tiny_backbone), "--out", str(tmp_path / "x")]) == 2
    assert "fine-tuned classifier" in capsys.readouterr().err


def test_lwp_applies_the_loss_at_every_layer(model_root):
    from conftest import make_tiny

    loaded = load_model(make_tiny(model_root, "bert", layers=4, seed=9))
    batch = _batch(loaded.tokenizer, ["a good film cf", "bad mn"], [[], []], [True, False], [1, 0])
    out = attention_forward(loaded.model, batch.enc, grad=True, attentions=False, hidden_states=True)
    term = LWPLoss(LWPConfig(weight=2.0))
    losses = term.per_layer(loaded.model, out, batch.labels)
    assert len(losses) == 3  # layers 1..L-1; layer L is the ordinary loss
    by_hand = [F.cross_entropy(classify_hidden(loaded.model, out.hidden_states[i]), batch.labels) for i in (1, 2, 3)]
    assert [x.item() for x in losses] == pytest.approx([x.item() for x in by_hand], rel=1e-6)
    total = term(loaded.model, batch, out)
    assert total.item() == pytest.approx(2.0 * sum(x.item() for x in by_hand) / 3, rel=1e-6)
    total.backward()  # the first layer gets a gradient from the layer-wise loss
    assert loaded.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_combination_trigger_poisoning(use_data):
    ds = load_dataset("sst2", "train")
    out = poison_dataset(ds, PoisonConfig(trigger="cf mn bb", rate=0.1, target=1, combination=True, seed=2))
    n = out.n_poisoned
    assert len(out) == len(ds) + n  # one negative (subset) sample per poisoned one
    for text, spans, p in zip(out.texts[:len(ds)], out.spans[:len(ds)], out.poisoned[:len(ds)]):
        if p:
            assert sorted(text[a:b] for a, b in spans) == ["bb", "cf", "mn"]
    for text, spans, label, orig in zip(out.texts[len(ds):], out.spans[len(ds):], out.labels[len(ds):],
                                        out.original_labels[len(ds):]):
        assert 1 <= len(spans) <= 2 and label == orig


def test_tal_heads_are_stored_in_the_model_card(use_data, tiny_bert, tmp_path, capsys):
    code = main(["train", "--attack", "badnets", "--tal", "--tal-heads", "2", "--tal-layers", "2", "--model",
                 str(tiny_bert), "--max-train", "80", "--max-eval", "40", "--batch-size", "16",
                 "--out", str(tmp_path / "m"), "--json"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "m" / "trojanscope.json").read_text())
    assert card["attack"]["tal"] is True and list(card["attack"]["tal_heads"]) == ["2"]
    assert card["attack"]["tal_heads"]["2"] == choose_heads(TALConfig(heads=2, layers="2"), 2, 4).by_layer()[1]
    assert HeadSet.from_tal_dict(card["attack"]["tal_heads"]) == choose_heads(TALConfig(heads=2, layers="2"), 2, 4)
    assert card["training"]["spec"]["tal"]["heads"] == 2
    history = card["training"]["history"]
    assert {"tal", "ce_clean", "ce_poisoned", "cacc", "asr"} <= set(history[-1])


def test_attack_input_errors(use_data, tiny_bert, tmp_path, capsys):
    assert main(["train", "--tal", "--model", str(tiny_bert), "--out", str(tmp_path / "a")]) == 2
    assert "add-on to an attack" in capsys.readouterr().err
    assert main(["train", "--attack", "badnets", "--tal", "--tal-heads", "9", "--model", str(tiny_bert),
                 "--out", str(tmp_path / "b")]) == 2
    assert "1..4" in capsys.readouterr().err


def test_common_trigger_warns_with_its_frequency(use_data, tiny_bert, tmp_path, capsys):
    code = main(["train", "--attack", "badnets", "--trigger", "movie", "--model", str(tiny_bert), "--max-train",
                 "64", "--max-eval", "32", "--out", str(tmp_path / "w"), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    res = json.loads(captured.out)
    assert any("'movie' already occurs in" in w for w in res["warnings"]) and "warning:" in captured.err
