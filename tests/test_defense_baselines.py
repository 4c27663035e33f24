"""The purification baselines change exactly what they claim: re-initialisation (the last layer),
fine-pruning (the least active FFN neurons, held at zero), Fine-mixing (a ratio of the encoder's
entries, never the head), PURE (the lowest-variance heads, at least one kept per layer, masked so they
contribute nothing, held through fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import make_tiny, synthetic_rows
from trojanscope.data.datasets import TextDataset
from trojanscope.defenses import PurifyContext, get_defense, purifiers
from trojanscope.defenses.fine_mixing import FineMixingConfig, mix_weights
from trojanscope.defenses.fine_pruning import FinePruningConfig, ffn_sites, least_active, neuron_activity
from trojanscope.defenses.pure import (CLSNormTerm, PureConfig, cls_variance, heads_switched_off, mask_heads,
                                       norm_coefficients, parse_heads, search_heads)
from trojanscope.models.heads import HeadSet
from trojanscope.defenses.reinit import ReinitConfig, reinitialize
from trojanscope.errors import TrojanScopeError
from trojanscope.models.attention import AttentionForward, attention_forward
from trojanscope.models.loading import load_model
from trojanscope.models.tokens import pad, tokenize

TEXTS = ["the movie was good", "a really very long and boring story , the plot was dull and the music poor"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("baseline-models")


@pytest.fixture(scope="module")
def clean() -> TextDataset:
    rows = synthetic_rows(64, 5)
    return TextDataset([t for t, _ in rows], [y for _, y in rows])


def ctx(**kw) -> PurifyContext:
    return PurifyContext(seed=0, device="cpu", progress=False, **kw)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def logits_of(lm, texts=TEXTS) -> torch.Tensor:
    enc = pad(lm.tokenizer, tokenize(lm.tokenizer, texts, None, 128), list(range(len(texts))))
    return attention_forward(lm.model, enc, attentions=False).logits


def test_registered_with_the_documented_defaults():
    names = purifiers()
    for name in ("reinit", "fine_pruning", "fine_mixing", "pure"):
        assert name in names
        assert get_defense(name).changes
    assert get_defense("fine_mixing").needs_pretrained
    assert not get_defense("pure").needs_pretrained
    assert ReinitConfig().layers == 1
    assert FinePruningConfig().ratio == 0.7
    p = PureConfig()
    assert (p.step, p.floor, p.norm_weight, p.floor_mode) == (10, 0.85, 0.15, "absolute")


# --- re-initialisation ------------------------------------------------------------------------------

def test_reinit_changes_exactly_the_last_layer_and_is_seeded(root):
    path = make_tiny(root, "bert", layers=3)
    lm = load_model(path)
    last = lm.model.bert.encoder.layer[2]
    with torch.no_grad():  # make the re-initialised biases and LayerNorms tell too
        last.output.dense.bias.add_(1.0)
        last.output.LayerNorm.weight.add_(1.0)
    before = state(lm.model)
    rng = torch.random.get_rng_state()
    names = reinitialize(lm.model, 1, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global random state is left alone
    prefix = "bert.encoder.layer.2."
    assert set(names) == {k for k in before if k.startswith(prefix)}
    diff = changed(before, lm.model)
    assert diff and all(k.startswith(prefix) for k in diff)
    for k in names:
        if k.endswith("weight") and "LayerNorm" not in k:
            assert k in diff
            std = float(lm.model.state_dict()[k].std())
            assert 0.01 < std < 0.03  # the model's own init: normal(0, initializer_range=0.02)
    assert torch.all(last.output.dense.bias == 0) and torch.all(last.output.LayerNorm.weight == 1)
    again = load_model(path)
    with torch.no_grad():
        again.model.bert.encoder.layer[2].output.dense.bias.add_(1.0)
        again.model.bert.encoder.layer[2].output.LayerNorm.weight.add_(1.0)
    reinitialize(again.model, 1, seed=0)
    assert not changed(state(lm.model), again.model)  # same seed, same weights
    reinitialize(again.model, 1, seed=1)
    assert changed(state(lm.model), again.model)


@pytest.mark.parametrize("arch,prefix", [("distilbert", "distilbert.transformer.layer.1."),
                                         ("roberta", "roberta.encoder.layer.1."),
                                         ("albert", "albert.encoder.albert_layer_groups.0.")])
def test_reinit_knows_each_architecture(root, arch, prefix):
    lm = load_model(make_tiny(root, arch))
    before = state(lm.model)
    names = reinitialize(lm.model, 1, seed=0)
    assert names and all(n.startswith(prefix) for n in names)
    assert changed(before, lm.model) <= set(names)


def test_reinit_purifier_records_the_layers_and_refuses_too_many(root, clean):
    lm = load_model(make_tiny(root, "bert"))
    before = state(lm.model)
    rec = get_defense("reinit").run(lm, clean, ReinitConfig(epochs=0), ctx())
    assert rec["reinitialized_layers"] == [2]
    assert all(k.startswith("bert.encoder.layer.1.") for k in changed(before, lm.model))
    with pytest.raises(TrojanScopeError, match="the model has 2 layers"):
        get_defense("reinit").run(lm, clean, ReinitConfig(layers=3, epochs=0), ctx())


# --- fine-pruning -----------------------------------------------------------------------------------

def test_neuron_activity_is_the_mean_over_real_tokens(root):
    lm = load_model(make_tiny(root, "bert"))
    site = ffn_sites(lm.model, 1)[0]
    act = neuron_activity(lm.model, lm.tokenizer, TEXTS, [site], batch_size=2)[site.key]
    outs: list[torch.Tensor] = []
    hook = lm.model.bert.encoder.layer[1].intermediate.register_forward_hook(lambda m, i, o: outs.append(o[0]))
    with torch.no_grad():
        for t in TEXTS:  # one text at a time: no padding at all
            lm.model(**lm.tokenizer(t, return_tensors="pt"))
    hook.remove()
    assert torch.allclose(act, torch.cat(outs).mean(0), atol=1e-5)


def test_fine_pruning_zeroes_exactly_the_least_active_neurons_and_keeps_them_zero(root, clean):
    path = make_tiny(root, "bert")

    def load():
        lm = load_model(path)
        with torch.no_grad():  # non-zero biases, so that zeroing them shows
            lm.model.bert.encoder.layer[1].intermediate.dense.bias.add_(0.05)
        return lm

    lm = load()
    site = ffn_sites(lm.model, 1)[0]
    expected = least_active(neuron_activity(lm.model, lm.tokenizer, clean.texts, [site])[site.key], 0.5)
    assert len(expected) == 32
    before = state(lm.model)
    rec = get_defense("fine_pruning").run(lm, clean, FinePruningConfig(epochs=0, ratio=0.5), ctx())
    assert rec["pruned_neurons"] == {"2": expected}
    idx = torch.tensor(expected)
    rest = torch.tensor([i for i in range(64) if i not in expected])
    inner, outer = "bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"
    now = lm.model.state_dict()
    assert torch.all(now[f"{inner}.weight"][idx] == 0) and torch.all(now[f"{inner}.bias"][idx] == 0)
    assert torch.all(now[f"{outer}.weight"][:, idx] == 0)
    assert torch.equal(now[f"{inner}.weight"][rest], before[f"{inner}.weight"][rest])
    assert torch.equal(now[f"{outer}.weight"][:, rest], before[f"{outer}.weight"][:, rest])
    assert changed(before, lm.model) == {f"{inner}.weight", f"{inner}.bias", f"{outer}.weight"}

    trained = load()
    rec = get_defense("fine_pruning").run(trained, clean, FinePruningConfig(epochs=1, batch_size=16, lr=1e-2,
                                                                            ratio=0.5), ctx())
    assert rec["pruned_neurons"] == {"2": expected} and rec["steps"] == 4
    now = trained.model.state_dict()
    assert torch.all(now[f"{inner}.weight"][idx] == 0) and torch.all(now[f"{inner}.bias"][idx] == 0)
    assert torch.all(now[f"{outer}.weight"][:, idx] == 0)
    assert not torch.equal(now[f"{inner}.weight"][rest], before[f"{inner}.weight"][rest])  # the rest trained
    assert not torch.equal(now["bert.encoder.layer.0.output.dense.weight"],
                           before["bert.encoder.layer.0.output.dense.weight"])
    assert not any(h for p in trained.model.parameters() for h in (p._backward_hooks or {}).values())


def test_fine_pruning_refuses_bad_ratios(root, clean):
    lm = load_model(make_tiny(root, "bert"))
    for ratio in (0.0, 1.0, 1.5):
        with pytest.raises(TrojanScopeError, match="ratio"):
            get_defense("fine_pruning").run(lm, clean, FinePruningConfig(ratio=ratio), ctx())


# --- Fine-mixing ------------------------------------------------------------------------------------

def test_mixing_resets_the_ratio_and_never_the_head(root, clean):
    bd = load_model(make_tiny(root, "bert", seed=0))
    pre_path = make_tiny(root, "bert", head=False, seed=1)
    pre = load_model(pre_path, task="encoder").model
    before = state(bd.model)
    probe = load_model(make_tiny(root, "bert", seed=0))
    mixed = mix_weights(probe.model, pre, 0.3, seed=0)
    theirs = dict(pre.named_parameters())
    for name, p in probe.model.bert.named_parameters():
        if name.startswith("pooler."):
            assert name not in mixed["masks"]
            continue
        pos = mixed["masks"][name]
        n = p.numel()
        assert pos.numel() == n - round(0.3 * n) and pos.unique().numel() == pos.numel()
        flat, orig = p.detach().reshape(-1), before["bert." + name].reshape(-1)
        assert torch.equal(flat[pos], theirs[name].detach().reshape(-1)[pos])
        keep = torch.ones(n, dtype=torch.bool)
        keep[pos] = False
        assert torch.equal(flat[keep], orig[keep])
    assert mixed["reset_share"] == pytest.approx(0.7, abs=1e-4)
    again = mix_weights(load_model(make_tiny(root, "bert", seed=0)).model, pre, 0.3, seed=0)
    assert all(torch.equal(again["masks"][k], v) for k, v in mixed["masks"].items())  # seeded

    rec = get_defense("fine_mixing").run(bd, clean, FineMixingConfig(epochs=0, keep_ratio=0.3),
                                         ctx(pretrained=str(pre_path)))
    assert rec["reset_share"] == pytest.approx(0.7, abs=1e-4) and rec["pretrained"] == str(pre_path)
    diff = changed(before, bd.model)
    assert diff and not any(k.startswith(("classifier.", "bert.pooler.")) for k in diff)
    assert "bert.encoder.layer.1.attention.self.query.weight" in diff


def test_mixing_refuses_missing_or_other_pretrained_weights(root, clean):
    from transformers import BertConfig, BertModel

    bd = load_model(make_tiny(root, "bert"))
    before = state(bd.model)
    run = get_defense("fine_mixing").run
    with pytest.raises(TrojanScopeError, match="needs the pre-trained weights"):
        run(bd, clean, FineMixingConfig(epochs=0), ctx())
    with pytest.raises(TrojanScopeError, match="number of layers"):
        run(bd, clean, FineMixingConfig(epochs=0), ctx(pretrained=str(make_tiny(root, "bert", head=False, layers=3))))
    with pytest.raises(TrojanScopeError, match="same architecture"):
        run(bd, clean, FineMixingConfig(epochs=0), ctx(pretrained=str(make_tiny(root, "roberta", head=False))))
    other = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=48, max_position_embeddings=128))
    shapes = r"same shapes: encoder.layer.0.intermediate.dense.bias is \(64,\) in the backdoored model but \(48,\)"
    with pytest.raises(TrojanScopeError, match=shapes):
        run(bd, clean, FineMixingConfig(epochs=0), ctx(pretrained=other))
    with pytest.raises(TrojanScopeError, match="no such directory|could not load"):
        run(bd, clean, FineMixingConfig(epochs=0), ctx(pretrained=str(root / "nowhere")))
    assert not changed(before, bd.model)  # refused before anything changed


def test_epur_resets_the_rows_that_moved_most(root, clean):
    bd = load_model(make_tiny(root, "bert", seed=0))
    pre_path = make_tiny(root, "bert", head=False, seed=1)
    pre = load_model(pre_path, task="encoder").model
    cf = bd.tokenizer.convert_tokens_to_ids("cf")
    with torch.no_grad():
        bd.model.get_input_embeddings().weight[cf] += 1.0
    before = state(bd.model)
    rec = get_defense("fine_mixing").run(bd, clean, FineMixingConfig(epochs=0, keep_ratio=1.0, epur=True, epur_top=1),
                                         ctx(pretrained=str(pre_path)))
    assert [e["token"] for e in rec["epur"]] == ["cf"] and rec["entries_reset"] == 0
    emb = bd.model.get_input_embeddings().weight
    assert torch.equal(emb[cf], pre.get_input_embeddings().weight[cf])
    assert changed(before, bd.model) == {"bert.embeddings.word_embeddings.weight"}
    other = torch.ones(emb.shape[0], dtype=torch.bool)
    other[cf] = False
    assert torch.equal(emb[other], before["bert.embeddings.word_embeddings.weight"][other])


# --- PURE -------------------------------------------------------------------------------------------

def test_search_prunes_lowest_first_backtracks_and_keeps_a_head_per_layer():
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.3, 0.8]])

    def by_count(heads):
        return 1.0 - 0.1 * len(heads)

    r = search_heads(scores, by_count, step=2, floor=0.75)
    assert r.heads.by_layer() == {0: [0], 1: [0]} and r.accuracy == pytest.approx(0.8)
    assert [e.get("backtrack", False) for e in r.log] == [False, False, True]  # 4 heads, back to 3, then stop
    r = search_heads(scores, by_count, step=2, floor=0.0)
    assert r.heads.by_layer() == {0: [0, 1], 1: [0, 1]}  # each layer keeps its highest-variance head
    r = search_heads(scores, lambda h: 0.5 if (1, 1) in h else 0.9, step=3, floor=0.85)
    assert r.heads.by_layer() == {0: [0], 1: [0]}  # head (1, 1) restored first (highest score of its step), then stop
    r = search_heads(scores, by_count, step=1, floor=0.0, max_per_layer=1)
    assert r.heads.by_layer() == {0: [0], 1: [0]}
    r = search_heads(scores, lambda h: 0.8, step=2, floor=0.85)
    assert r.heads == HeadSet() and "below the floor" in r.stopped


def test_norm_coefficients_and_the_penalty_match_a_hand_computation():
    var = torch.tensor([[0.1, 99.0], [0.2, 0.2], [0.4, 0.4]])
    assert norm_coefficients(var, HeadSet([(0, 1)])) == pytest.approx([1.0, 1 / 3, 0.0])  # pruned head left out
    assert norm_coefficients(var, HeadSet([(0, 1)]), "uniform") == [1.0, 1.0, 1.0]
    assert norm_coefficients(torch.full((2, 2), 0.3), HeadSet()) == [1.0, 1.0]
    torch.manual_seed(0)
    att = torch.softmax(torch.randn(2, 2, 2, 3, 3), -1)
    att[:, 0, 1] = 0.0  # a masked head's row of zeros must not give NaN gradients
    att.requires_grad_(True)
    kept = torch.tensor([[True, False], [True, True]])
    term = CLSNormTerm(0.15, torch.tensor([1.0, 0.5]), kept)
    value = term(None, None, AttentionForward(None, att))
    a = att.detach()[:, :, :, 0, :]
    expected = 0.15 * (a[:, 0, 0].norm() + 0.5 * (a[:, 1, 0].norm() + a[:, 1, 1].norm()))
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-5)
    value.backward()
    assert torch.isfinite(att.grad).all()


def test_cls_variance_matches_a_hand_computation(root):
    lm = load_model(make_tiny(root, "bert"))
    got = cls_variance(lm.model, lm.tokenizer, tokenize(lm.tokenizer, TEXTS, None, 128), batch_size=2)
    rows = []
    with torch.no_grad():
        for t in TEXTS:
            out = lm.model(**lm.tokenizer(t, return_tensors="pt"), output_attentions=True)
            rows.append(torch.stack([a[0, :, 0, :].var(-1, unbiased=False) for a in out.attentions]))
    assert got.shape == (2, 4)
    assert torch.allclose(got, torch.stack(rows).mean(0), atol=1e-6)


def test_masked_heads_contribute_nothing_and_keep_the_attention_shape(root):
    lm = load_model(make_tiny(root, "bert"))
    heads = HeadSet([(0, 1), (1, 0), (1, 2)])
    reference = load_model(make_tiny(root, "bert"))
    with heads_switched_off(reference.model, heads):
        switched = logits_of(reference)
    mask_heads(lm.model, heads)
    masked = logits_of(lm)
    assert torch.allclose(switched, masked, atol=1e-5)  # the search's trial is the final pruning
    enc = pad(lm.tokenizer, tokenize(lm.tokenizer, TEXTS, None, 128), [0, 1])
    att = attention_forward(lm.model, enc).attentions
    assert att.shape[1:3] == (2, 4)
    n = int(enc.attention_mask[1].sum())
    assert torch.allclose(att[1, 1, 0, :n, :n], torch.full((n, n), 1.0 / n), atol=1e-6)  # switched off: uniform
    with torch.no_grad():  # whatever the pruned heads' query/key/value do now, the output does not move
        for layer, hs in heads.by_layer().items():
            sa = lm.model.bert.encoder.layer[layer].attention.self
            for h in hs:
                for lin in (sa.query, sa.key, sa.value):
                    lin.weight[h * 8:(h + 1) * 8] = torch.randn(8, 32)
                    lin.bias[h * 8:(h + 1) * 8] = torch.randn(8)
    assert torch.allclose(logits_of(lm), masked, atol=1e-5)


def test_pure_prunes_the_lowest_variance_heads_and_they_stay_pruned(root, clean):
    path = make_tiny(root, "bert")
    dev = TextDataset(clean.texts[:24], clean.labels[:24])
    probe = load_model(path)
    scores = cls_variance(probe.model, probe.tokenizer, tokenize(probe.tokenizer, dev.texts, None, 128))
    lm = load_model(path)
    before = state(lm.model)
    rec = get_defense("pure").run(lm, clean, PureConfig(epochs=0, floor=0.0, step=3), ctx(dev=dev))
    assert rec["pruned_heads"] == {str(l + 1): sorted(set(range(4)) - {int(scores[l].argmax())}) for l in range(2)}
    assert rec["n_pruned"] == 6 and rec["n_train"] == len(clean) and rec["dev_source"] == "ctx.dev"
    rec = get_defense("pure").run(load_model(path), clean, PureConfig(epochs=0, floor=0.0, max_per_layer=1),
                                  ctx(dev=dev))
    assert rec["pruned_heads"] == {str(l + 1): [int(scores[l].argmin())] for l in range(2)}

    rec = get_defense("pure").run(lm := load_model(path), clean,
                                  PureConfig(epochs=1, batch_size=16, lr=1e-2, floor=0.0, heads="1:1;2:0,2"), ctx())
    assert rec["pruned_heads"] == {"1": [1], "2": [0, 2]} and rec["n_train"] == len(clean) - 6
    assert "cls_norm" in rec["history"][-1]  # fine-tuned with the normalisation term
    for layer, hs in {0: [1], 1: [0, 2]}.items():
        sa = lm.model.bert.encoder.layer[layer].attention
        for h in hs:
            s = slice(h * 8, (h + 1) * 8)
            for lin in (sa.self.query, sa.self.key, sa.self.value):
                assert torch.all(lin.weight[s] == 0) and torch.all(lin.bias[s] == 0)
            assert torch.all(sa.output.dense.weight[:, s] == 0)
    assert not torch.equal(lm.model.bert.encoder.layer[0].attention.self.query.weight[:8],
                           before["bert.encoder.layer.0.attention.self.query.weight"][:8])  # kept heads trained


def test_pure_refuses_pruning_every_head_of_a_layer(root, clean):
    lm = load_model(make_tiny(root, "bert"))
    before = state(lm.model)
    run = get_defense("pure").run
    with pytest.raises(TrojanScopeError, match="at least one head per layer.*all 4 heads of layer 2"):
        run(lm, clean, PureConfig(heads="2:0,1,2,3"), ctx())
    with pytest.raises(TrojanScopeError, match="at least one head per layer"):
        run(lm, clean, PureConfig(max_per_layer=4), ctx())
    with pytest.raises(TrojanScopeError, match="LAYER:HEAD"):
        run(lm, clean, PureConfig(heads="0,1"), ctx())
    with pytest.raises(TrojanScopeError, match="head 7 of layer 1 does not exist"):
        run(lm, clean, PureConfig(heads="1:7"), ctx())
    with pytest.raises(TrojanScopeError, match="floor mode"):
        run(lm, clean, PureConfig(floor_mode="sometimes"), ctx())
    assert not changed(before, lm.model)
    with pytest.raises(TrojanScopeError, match="ALBERT shares"):
        run(load_model(make_tiny(root, "albert")), clean, PureConfig(), ctx())
    assert parse_heads("3:0,1;6:2").by_layer() == {2: [0, 1], 5: [2]}  # 1-based layers in, 0-based in memory
    assert parse_heads("3:0,1;6:2") == parse_heads({"3": [1, 0], 6: [2]}) == parse_heads("3:1;6:2;3:0")


def test_tsft_takes_another_augmentation_in_place_of_splitting(use_data, tiny_pair):
    """Seed Table III: TS-FT with EDA, AEDA or Add Trig instead of token splitting; unknown names refused."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.defenses import PurifyContext
    from trojanscope.defenses.finetune import TSFTConfig, run_tsft
    from trojanscope.errors import TrojanScopeError
    from trojanscope.models.loading import load_model

    clean = load_dataset("sst2", "train").head(40, 0)
    m = load_model(tiny_pair / "demo" / "backdoored")
    info = run_tsft(m, clean, TSFTConfig(epochs=1, augmentation="addtrig", k=2), PurifyContext(progress=False))
    assert info["n_train"] == 80
    with pytest.raises(TrojanScopeError, match="augmentation"):
        TSFTConfig(augmentation="backtranslation").validate()
