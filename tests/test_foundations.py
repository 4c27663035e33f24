"""The pieces Purify and Scan build on (issue 11, "one home per idea"): one planted-attack answer, a
model's declared capabilities, one sentence representation, one batched forward, one attack
registry, and runs repeated from their cards."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import make_tiny
from trojanscope.cli import main
from trojanscope.errors import TrojanScopeError
from trojanscope.models import load_model
from trojanscope.models.attention import attention_forward
from trojanscope.models.forward import batched_forward, stack_kept
from trojanscope.models.planted import attack_of, planted_attack, resolve_target
from trojanscope.models.representation import classify_hidden, sentence_representation
from trojanscope.models.tokens import encode

ARCHS = ("bert", "roberta", "distilbert", "albert")
TEXTS = ["the movie was good", "a dull and boring plot", "cf", "really quite a wonderful film and story",
         "it is", "the actors were awful but the music was superb and the ending fine"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- one representation --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_hand_written_heads_reproduce_the_models_own_logits(model_root, arch):
    loaded = load_model(make_tiny(model_root, arch, seed=3))
    enc = encode(loaded.tokenizer, TEXTS)
    out = attention_forward(loaded.model, enc, attentions=False, hidden_states=True)
    with torch.inference_mode():
        mine = classify_hidden(loaded.model, out.hidden_states[-1])
    assert torch.allclose(mine, out.logits, atol=1e-5), arch


@pytest.mark.parametrize("arch", ["bert", "roberta", "albert"])
def test_pooler_representation_is_the_models_pooler_output(model_root, arch):
    """Bare encoders of every architecture with a pooler, and the BERT/ALBERT classifiers' base models."""
    for head in (False, True):
        if head and arch == "roberta":
            continue  # RobertaForSequenceClassification has no pooler (its head pools itself)
        loaded = load_model(make_tiny(model_root, arch, head=head, seed=4), task="classifier" if head else "encoder")
        enc = encode(loaded.tokenizer, TEXTS)
        base = loaded.model.base_model
        with torch.inference_mode():
            ref = base(**enc.model_inputs()).pooler_output
            out = attention_forward(loaded.model, enc, attentions=False, hidden_states=True)
            rep = sentence_representation(loaded.model, out.hidden_states[-1], "pooler")
        assert torch.allclose(rep, ref, atol=1e-6), (arch, head)
        assert loaded.can("pooler")


def test_swap_representation_is_each_models_own_pooler(model_root):
    """Two different models: each representation equals its own model's pooler_output (a swap of a
    model with itself passes for any pooler; this does not)."""
    from trojanscope.analysis.swap import representations

    a = load_model(make_tiny(model_root, "bert", seed=5))
    b = load_model(make_tiny(model_root, "bert", seed=6))
    enc = encode(a.tokenizer, TEXTS)
    for m in (a, b):
        reps, _ = representations(m.model, m.tokenizer, TEXTS, representation="pooler", batch_size=4)
        with torch.inference_mode():
            ref = m.model.base_model(**enc.model_inputs()).pooler_output
        assert torch.allclose(reps, ref, atol=1e-5)
    ra, _ = representations(a.model, a.tokenizer, TEXTS, representation="pooler")
    rb, _ = representations(b.model, b.tokenizer, TEXTS, representation="pooler")
    assert not torch.allclose(ra, rb, atol=1e-3)


def test_distilbert_has_no_pooler_and_says_so(model_root):
    from trojanscope.analysis.swap import representations

    loaded = load_model(make_tiny(model_root, "distilbert", seed=3))
    assert not loaded.can("pooler")
    with pytest.raises(TrojanScopeError, match="no pooler"):
        representations(loaded.model, loaded.tokenizer, TEXTS, representation="pooler")


# --- one batched forward ---------------------------------------------------------------------------

def test_batched_forward_returns_input_order_and_matches_one_by_one(model_root):
    loaded = load_model(make_tiny(model_root, "bert", seed=7))
    texts = TEXTS * 3
    random.Random(0).shuffle(texts)

    def keep(out, enc, idx):
        return out.attentions[:, :, :, 0, :].float().sum(-1).cpu()  # [B, L, H]: reduced on the fly

    res = batched_forward(loaded.model, loaded.tokenizer, texts, keep=keep, attentions=True, batch_size=4)
    for i, t in enumerate(texts):
        with torch.inference_mode():
            one = loaded.model(**encode(loaded.tokenizer, [t]).model_inputs()).logits[0]
        assert np.allclose(res.logits[i], one.numpy(), atol=1e-5)
    assert stack_kept(res).shape == (len(texts), 2, 4)
    assert torch.allclose(stack_kept(res), torch.ones(len(texts), 2, 4), atol=1e-4)  # each row sums to 1
    assert not loaded.model.training


@pytest.mark.slow
def test_batch_size_does_not_change_cacc(model_root):
    from trojanscope.training.metrics import predict_proba

    loaded = load_model(make_tiny(model_root, "bert", seed=7))
    p1 = predict_proba(loaded.model, loaded.tokenizer, TEXTS * 5, batch_size=1)
    p2 = predict_proba(loaded.model, loaded.tokenizer, TEXTS * 5, batch_size=64)
    assert np.allclose(p1, p2, atol=1e-5)


# --- capabilities ----------------------------------------------------------------------------------

def test_a_bare_encoder_declares_it_cannot_classify(tiny_backbone, tiny_bert, capsys):
    enc = load_model(tiny_backbone)
    assert not enc.can("classify") and enc.can("attention") and enc.can("pooler")
    assert load_model(tiny_bert).can("classify")
    # the untrained head is the same in every process (seeded), never the RNG's state of the moment
    torch.manual_seed(123)
    w1 = load_model(tiny_backbone).model.classifier.weight.detach().clone()
    torch.manual_seed(456)
    assert torch.equal(w1, load_model(tiny_backbone).model.classifier.weight)
    code, _, err = run(capsys, "predict", "--model", str(tiny_backbone), "--text", "a good movie")
    assert code == 2 and "bare encoder" in err and "Fine-tune it first" in err


def test_probe_of_a_bare_encoder_shows_attention_but_no_labels(tiny_backbone, capsys):
    code, out, err = run(capsys, "probe", "--model", str(tiny_backbone), "--text", "a good movie", "--trigger", "cf",
                         "--json")
    assert code == 0, err
    m = json.loads(out)["models"][0]
    assert m["classifies"] is False and m["clean"]["label"] is None and m["clean"]["probs"] is None
    assert len(m["triggered"]["cls_trigger_mass"]) == 2  # attention per layer is still there
    assert "bare encoder" in err


def test_es_and_anatomy_refuse_a_bare_encoder(use_data, tiny_backbone):
    from trojanscope.analysis.anatomy import trigger_anatomy
    from trojanscope.analysis.effectiveness import model_effectiveness
    from trojanscope.data.datasets import load_dataset

    loaded = load_model(tiny_backbone)
    test = load_dataset("sst2", "test")
    with pytest.raises(TrojanScopeError, match="bare encoder"):
        model_effectiveness(loaded, test, "cf")
    with pytest.raises(TrojanScopeError, match="bare encoder"):
        trigger_anatomy(loaded, test, "cf")


# --- one planted-attack answer ---------------------------------------------------------------------

@pytest.mark.slow
def test_every_reader_takes_the_cards_target(use_data, tiny_bert, tmp_path, capsys):
    """A backdoor with target 0: eval, heads and the swap all use 0 (one of them used to default to 1)."""
    code, out, err = run(capsys, "train", "--model", str(tiny_bert), "--out", str(tmp_path / "bd0"), "--attack",
                         "badnets", "--target", "0", "--poison-rate", "0.2", "--epochs", "1", "--max-train", "64",
                         "--max-eval", "32", "--json")
    assert code == 0, err
    loaded = load_model(tmp_path / "bd0")
    assert attack_of(loaded).target == 0 and resolve_target(attack_of(loaded), loaded) == 0
    code, out, err = run(capsys, "eval", "--model", str(tmp_path / "bd0"), "--max-eval", "20", "--json")
    assert code == 0 and json.loads(out)["target"] == 0, err
    code, out, err = run(capsys, "heads", "--model", str(tmp_path / "bd0"), "--n", "8", "--json")
    assert code == 0 and json.loads(out)["target"] == 0, err
    code, out, err = run(capsys, "swap", "--clean", str(tiny_bert), "--backdoored", str(tmp_path / "bd0"), "--n",
                         "8", "--no-layers", "--json")
    assert code == 0 and json.loads(out)["target"] == 0, err


def test_a_trigger_without_a_target_is_refused_not_guessed(use_data, tiny_bert, capsys):
    code, _, err = run(capsys, "heads", "--model", str(tiny_bert), "--trigger", "cf", "--n", "8")
    assert code == 2 and "target" in err
    code, out, err = run(capsys, "heads", "--model", str(tiny_bert), "--trigger", "cf", "--target", "1", "--n", "8",
                         "--json")
    assert code == 0 and json.loads(out)["target"] == 1


def test_overrides_and_old_por_cards(tmp_path):
    from trojanscope.models.planted import from_attack_dict

    por = from_attack_dict({"name": "por", "triggers": "cf,mn", "target": "cls", "insertions": 3})
    assert por.triggers == ("cf", "mn") and por.target is None and por.por_representation == "cls"
    new = from_attack_dict({"name": "por", "triggers": "cf,mn", "representation": "pooler"})
    assert new.por_representation == "pooler"
    bd = from_attack_dict({"name": "lwp", "trigger": "cf mn bb", "target": 0, "combination": True})
    assert bd.triggers == ("cf mn bb",) and bd.combination
    typed = bd.with_overrides(trigger="  tq ", target=1, insertions=2)
    assert (typed.trigger, typed.target, typed.insertions) == ("tq", 1, 2)
    assert bd.with_overrides(trigger="", target=None) is bd
    assert planted_attack(None).describe()["attack"] == "none"


# --- one registry ----------------------------------------------------------------------------------

def test_cli_choices_and_the_pipeline_read_the_registry(capsys):
    from trojanscope.attacks import ATTACKS, classifier_attacks
    from trojanscope.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    attack_action = next(a for a in train._actions if a.dest == "attack")
    assert list(attack_action.choices) == classifier_attacks()
    assert "por" in ATTACKS and ATTACKS["por"].kind == "encoder" and "por" not in classifier_attacks()
    assert ATTACKS["ep"].needs_classifier and ATTACKS["lwp"].combination and not ATTACKS["none"].poisons
    with pytest.raises(TrojanScopeError, match="allowed: none, badnets"):
        ATTACKS.get("trojannn")
    from trojanscope.training.pipeline import TrainSpec

    with pytest.raises(TrojanScopeError, match="trojanscope por"):
        TrainSpec(attack="por").validate()


# --- a run repeated from its card ---------------------------------------------------------------

def test_train_from_card_reproduces_the_model(use_data, tiny_bert, tmp_path, capsys):
    from safetensors.torch import load_file

    code, out, err = run(capsys, "train", "--model", str(tiny_bert), "--out", str(tmp_path / "a"), "--attack",
                         "badnets", "--poison-rate", "0.2", "--epochs", "1", "--max-train", "64", "--max-eval", "16",
                         "--warmup", "0.2", "--weight-decay", "0", "--seed", "3", "--json")
    assert code == 0, err
    spec = json.loads((tmp_path / "a" / "trojanscope.json").read_text())["training"]["spec"]
    assert spec["train"]["warmup"] == 0.2 and spec["train"]["weight_decay"] == 0.0 and spec["train"]["seed"] == 3
    code, out, err = run(capsys, "train", "--from-card", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--json")
    assert code == 0, err
    wa, wb = (load_file(tmp_path / d / "model.safetensors") for d in ("a", "b"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert json.loads(out)["cacc"] == json.loads((tmp_path / "a" / "trojanscope.json").read_text())["metrics"]["cacc"]
    # a card from elsewhere with a key this version does not know: one clear line
    card = json.loads((tmp_path / "a" / "trojanscope.json").read_text())
    card["training"]["spec"]["tal"]["heads_per_layer"] = 3
    (tmp_path / "a" / "trojanscope.json").write_text(json.dumps(card))
    code, _, err = run(capsys, "train", "--from-card", str(tmp_path / "a"), "--out", str(tmp_path / "c"))
    assert code == 2 and "heads_per_layer" in err and "spec.tal" in err
    code, _, err = run(capsys, "train", "--from-card", str(tmp_path / "nope"))
    assert code == 2 and "no model card" in err


def test_learning_rate_schedule_is_a_linear_warmup_then_a_linear_decay(use_data, tiny_bert):
    """The rate each step uses: up from 0 over the warm-up steps, then down to 0 at the last step (transformers'
    get_linear_schedule_with_warmup)."""
    from trojanscope.data import PoisonConfig, load_dataset, poison_dataset
    from trojanscope.models import load_model
    from trojanscope.training.loop import TrainConfig, train

    loaded = load_model(str(tiny_bert), num_labels=2, seed=0)
    data = poison_dataset(load_dataset("sst2", "train").head(64, 0), PoisonConfig(rate=0.1))
    events: list[dict] = []
    train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup=0.25,
                                                            device="cpu"),
          on_event=events.append, progress=False)
    lrs = [e["lr"] for e in events if e["event"] == "step"]
    total, warm = 8, 2
    expected = [1e-3 * (s / warm if s < warm else (total - s) / (total - warm)) for s in range(total)]
    assert lrs == pytest.approx(expected, abs=1e-12)


# --- pages read the same answers ------------------------------------------------------------------

def test_probe_page_marks_a_bare_encoder_instead_of_predicting(tiny_pair, tiny_backbone, data_dir, monkeypatch,
                                                               tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "demo").symlink_to(tiny_pair / "demo")
    (runs / "encoder").symlink_to(tiny_backbone)
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(runs))
    monkeypatch.setenv("TROJANSCOPE_UI_ALLOW_ANY_PATH", "1")  # the symlinked tiny encoder lives outside runs/
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.chdir(root)
    at = AppTest.from_file(str(root / "pages" / "1_Probe.py"), default_timeout=180)
    at.session_state["pair"] = {"clean": str(runs / "encoder"), "backdoored": str(runs / "demo" / "backdoored")}
    at.run()
    at.text_input(key="probe_text").set_value("the film was awful").run()
    at.text_input(key="probe_trigger").set_value("cf").run()
    assert not at.exception, [e.value for e in at.exception]
    df = at.dataframe[0].value
    enc_rows = df[df["model"] == "clean"]
    assert all("bare encoder" in p for p in enc_rows["prediction"])
    assert any("bare encoder" in i.value for i in at.info), [i.value for i in at.info] + [e.value for e in at.error]
    assert {"cls_clean", "cls_backdoored"} <= {el.key for el in at.get("plotly_chart")}  # attention still shown


def test_attack_lab_lists_the_registry_and_takes_defaults_from_the_configs(tiny_pair, data_dir, monkeypatch,
                                                                           tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from trojanscope.attacks import ATTACKS, TALConfig
    from trojanscope.training.loop import TrainConfig

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
    monkeypatch.chdir(root)
    at = AppTest.from_file(str(root / "pages" / "4_Attack_Lab.py"), default_timeout=60).run()
    assert not at.exception
    assert set(at.selectbox(key="lab_attack").options) == {f"{n}: {a.description}" for n, a in ATTACKS.items()}
    assert at.number_input(key="lab_tal_heads").value == TALConfig().heads
    assert at.number_input(key="lab_warmup").value == pytest.approx(TrainConfig().warmup)
    assert at.number_input(key="lab_wd").value == pytest.approx(TrainConfig().weight_decay)
    assert at.number_input(key="lab_lr").value == pytest.approx(TrainConfig().lr)
