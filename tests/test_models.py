"""Model loading and saving: architectures, eager attention, safety rules, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny
from trojanscope.errors import TrojanScopeError
from trojanscope.models import (CARD_NAME, ModelCard, encode, extract_attention, load_model, read_card,
                                resolve_source, save_model)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "albert"])
def test_every_architecture_loads_eager_and_gives_attention(model_root, arch):
    path = make_tiny(model_root, arch)
    loaded = load_model(path)
    assert loaded.model.config._attn_implementation == "eager"
    res = extract_attention(loaded.model, loaded.tokenizer, ["the movie was good", "bad"])
    assert res.attentions.shape[:3] == (2, 2, 4)
    # every query's attention sums to 1 over the real (non-padding) keys, and 0 on padding keys
    for i, n in enumerate(res.lengths):
        rows = res.attentions[i, :, :, :n, :]
        np.testing.assert_allclose(rows[..., :n].sum(-1), 1.0, atol=1e-5)
        assert np.abs(rows[..., n:]).max(initial=0) < 1e-6


def test_backbone_gets_a_head_of_the_requested_size(tiny_backbone):
    loaded = load_model(tiny_backbone, num_labels=4)
    assert loaded.num_labels == 4
    assert loaded.model(**encode(loaded.tokenizer, ["a b"]).model_inputs()).logits.shape == (1, 4)


def test_encoder_task_returns_bare_encoder(tiny_bert):
    loaded = load_model(tiny_bert, task="encoder")
    assert not hasattr(loaded.model, "classifier")
    assert loaded.model.config._attn_implementation == "eager"


def test_label_count_mismatch_is_refused(tiny_bert):
    with pytest.raises(TrojanScopeError, match="2 labels but the data has 3"):
        load_model(tiny_bert, num_labels=3)


def test_pickle_weights_refused_unless_opted_in(model_root, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = make_tiny(model_root, "bert", seed=5)
    model = AutoModelForSequenceClassification.from_pretrained(src)
    out = tmp_path / "pickled"
    model.save_pretrained(out)
    (out / "model.safetensors").unlink()
    torch.save(model.state_dict(), out / "pytorch_model.bin")  # an old-style pickle checkpoint
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    assert (out / "pytorch_model.bin").exists() and not (out / "model.safetensors").exists()
    with pytest.raises(TrojanScopeError, match="--allow-pickle"):
        load_model(out)
    loaded = load_model(out, allow_pickle=True)
    ref = load_model(src)
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), ref.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_corrupted_weights_and_missing_dirs_give_clear_errors(tiny_bert, tmp_path):
    import shutil

    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_bert, bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TrojanScopeError, match="corrupted"):
        load_model(bad)
    with pytest.raises(TrojanScopeError, match="does not exist"):
        load_model(tmp_path / "nope" / "model")
    with pytest.raises(TrojanScopeError, match="hub"):
        load_model("some-org/not-a-real-model-xyz")  # HF_HUB_OFFLINE=1 in tests


def test_hub_ids_and_builtins_resolve():
    assert resolve_source("bert-base-uncased") == ("hub", "bert-base-uncased")
    assert resolve_source("org/name") == ("hub", "org/name")
    kind, path = resolve_source("minilm")
    assert kind == "local" and path.endswith("model")


def test_save_writes_safetensors_and_card(tiny_bert, tmp_path):
    loaded = load_model(tiny_bert)
    card = ModelCard(base_model="tiny", num_labels=2, attack={"name": "badnets", "trigger": "cf"}, seed=3,
                     metrics={"cacc": 0.5})
    out = save_model(loaded.model, loaded.tokenizer, tmp_path / "saved", card)
    assert (out / "model.safetensors").exists() and not (out / "pytorch_model.bin").exists()
    stored = json.loads((out / CARD_NAME).read_text())
    assert stored["attack"]["trigger"] == "cf" and stored["seed"] == 3
    assert read_card(out).metrics == {"cacc": 0.5}
    again = load_model(out)
    assert again.card.base_model == "tiny"


def test_default_backbone_loads_offline():
    loaded = load_model("minilm", num_labels=2)
    cfg = loaded.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads) == ("bert", 6, 12)
    assert cfg._attn_implementation == "eager"
    assert loaded.tokenizer.tokenize("uw") == ["u", "##w"]


def test_planted_attack_follows_clean_fine_tuning_back_to_the_por_encoder(tmp_path):
    from trojanscope.models import CARD_NAME, ModelCard, planted_attack
    from trojanscope.utils import to_jsonable, write_json

    def card_at(name: str, **kw) -> ModelCard:
        card = ModelCard(**kw)
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / CARD_NAME, to_jsonable(card))
        return card

    card_at("por", base_model="minilm", task="encoder",
            attack={"name": "por", "triggers": "cf,mn", "insertions": 5, "target": "pooler"})  # an older card
    ft = card_at("ft", base_model=str(tmp_path / "por"), attack={"name": "none"})
    got = planted_attack(ft)
    assert (got.name, got.triggers, got.insertions, got.inherited) == ("por", ("cf", "mn"), 5, True)
    assert got.target is None and got.por_representation == "pooler"  # POR's "target" is not a label
    bd = card_at("bd", base_model="minilm", attack={"name": "badnets", "trigger": "cf", "target": 0})
    assert (planted_attack(bd).trigger, planted_attack(bd).target, planted_attack(bd).inherited) == ("cf", 0, False)
    assert not planted_attack(card_at("clean", base_model="minilm", attack=None)).known
    assert not planted_attack(None).known
    # a cycle of clean fine-tunes ends, empty
    loop = card_at("loop", base_model=str(tmp_path / "loop"), attack={"name": "none"})
    assert planted_attack(loop).name is None
