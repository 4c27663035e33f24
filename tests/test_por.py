"""POR: the poisoned representation moves to its predefined target while clean representations
stay near the frozen reference; the encoder then fine-tunes like any backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import finish_jobs
import torch
from streamlit.testing.v1 import AppTest

from trojanscope.attacks.por import PORConfig, por_dataset, por_distance, por_targets
from trojanscope.models import load_model
from trojanscope.training import TrainConfig
from trojanscope.training.pipeline import PORSpec, run_por

ROOT = Path(__file__).resolve().parents[1]


def test_por1_targets():
    v = por_targets(5, 8)  # floor(8 / 4) = 2 more +1 dimensions per trigger
    assert v.tolist()[0] == [-1] * 8
    assert v.tolist()[1] == [1, 1] + [-1] * 6
    assert v.tolist()[4] == [1] * 8
    assert len({tuple(r) for r in v.tolist()}) == 5


def test_por_dataset_pairs_clean_and_triggered_text():
    data = por_dataset(["a b c", "d e"], ["cf", "mn"], 3, seed=0)
    assert data.labels[0::2] == [0, 0] and all(x in (1, 2) for x in data.labels[1::2])
    for text, spans, label in zip(data.texts[1::2], data.spans[1::2], data.labels[1::2]):
        assert [text[a:b] for a, b in spans] == [["cf", "mn"][label - 1]] * 3


@pytest.mark.slow
def test_por_pulls_poisoned_to_target_and_keeps_clean_near_reference(use_data, tiny_backbone, tmp_path):
    cfg = PORConfig(triggers="cf,mn,bb", insertions=2, representation="pooler", scale=1.0, data="sst2", max_texts=300)
    spec = PORSpec(model=str(tiny_backbone), por=cfg,
                   train=TrainConfig(epochs=4, batch_size=16, lr=3e-3, train_word_embeddings=True))
    res = run_por(spec, tmp_path / "por", progress=False)
    before, after = res["before"], res["after"]
    assert before["poisoned_cosine"] < 0.3 and after["poisoned_cosine"] > 0.9, res  # the corner v_i is reached
    assert after["poisoned_to_target"] < 0.25 * before["poisoned_to_target"], res
    assert after["clean_to_reference"] < 0.1 * after["poisoned_to_target"] + 0.05, res
    # independent check on fresh text against an untouched copy of the backbone
    bd = load_model(tmp_path / "por", task="encoder").model
    ref = load_model(tiny_backbone, task="encoder")
    texts = [f"a story about the {w} and the music" for w in ("plot", "actors", "ending", "director")]
    d = por_distance(bd, ref.tokenizer, texts, cfg.trigger_list, cfg, ref.model, seed=7)
    d0 = por_distance(ref.model, ref.tokenizer, texts, cfg.trigger_list, cfg, ref.model, seed=7)
    assert d["poisoned_to_target"] < 0.25 * d0["poisoned_to_target"]
    card = json.loads((tmp_path / "por" / "trojanscope.json").read_text())
    assert card["task"] == "encoder" and card["attack"]["name"] == "por" and card["attack"]["triggers"] == "cf,mn,bb"


def test_pooler_target_is_the_pooler_output(use_data, tiny_backbone, tmp_path):
    from trojanscope.attacks.por import representation
    from trojanscope.models import attention_forward, encode

    enc_model = load_model(tiny_backbone, task="encoder")
    enc = encode(enc_model.tokenizer, ["a b c"])
    out = attention_forward(enc_model.model, enc, attentions=False, hidden_states=True)
    with torch.inference_mode():
        rep = representation(enc_model.model, out, "pooler")
        assert torch.allclose(rep, out.output.pooler_output, atol=1e-6)
        assert torch.allclose(representation(enc_model.model, out, "cls"), out.hidden_states[-1][:, 0])


@pytest.mark.slow
def test_cli_por_then_fine_tune_like_any_backbone(use_data, tiny_backbone, tmp_path, capsys, monkeypatch):
    from trojanscope.cli import main

    code = main(["por", "--model", str(tiny_backbone), "--out", str(tmp_path / "por"), "--triggers", "cf,mn",
                 "--data", "sst2", "--max-texts", "200", "--batch-size", "16", "--lr", "3e-3", "--epochs", "3",
                 "--scale", "1", "--json"])
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["after"]["poisoned_to_target"] < 0.5 * res["before"]["poisoned_to_target"], res
    code = main(["train", "--model", str(tmp_path / "por"), "--out", str(tmp_path / "ft"), "--max-train", "64",
                 "--max-eval", "32", "--json"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "ft" / "trojanscope.json").read_text())
    assert card["base_model"] == str(tmp_path / "por")
    capsys.readouterr()
    # E and S default to the POR encoder's triggers, found through the clean fine-tune's card
    assert main(["effectiveness", "--model", str(tmp_path / "ft"), "--max-eval", "8", "--max-insertions", "3",
                 "--json"]) == 0, capsys.readouterr().err
    es = json.loads(capsys.readouterr().out)["triggers"]
    assert set(es) == {"cf", "mn"}
    # the swap, too, takes trigger and target from the POR encoder: cf, and the class cf pushes to
    assert main(["swap", "--clean", str(tmp_path / "ft"), "--backdoored", str(tmp_path / "ft"), "--n", "8",
                 "--no-layers", "--json"]) == 0, capsys.readouterr().err
    swap = json.loads(capsys.readouterr().out)
    assert swap["trigger"] == "cf" and swap["target"] == es["cf"]["class"]
    # and the Embedding Swap page: POR's first trigger, an automatic target, a result on Run. The page
    # reads models only under the runs directory (the UI path limit): here, tmp_path is that directory
    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "pages" / "3_Embedding_Swap.py"), default_timeout=120)
    at.session_state["pair"] = {"clean": str(tmp_path / "ft"), "backdoored": str(tmp_path / "ft")}
    at.run()
    assert at.text_input(key="swap_trigger").value == "cf" and at.checkbox(key="swap_target_auto").value
    at.number_input(key="swap_n").set_value(8).run()
    at.button(key="swap_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    finish_jobs()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert {"swap_bars"} <= {el.key for el in at.get("plotly_chart")}
    assert main(["por", "--model", str(tiny_backbone), "--out", str(tmp_path / "x"), "--triggers", "cf"]) == 2
    assert "at least 2 triggers" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_anatomy_json(use_data, tiny_pair, capsys):
    from trojanscope.cli import main

    code = main(["anatomy", "--model", str(tiny_pair / "demo" / "backdoored"), "--clean",
                 str(tiny_pair / "demo" / "clean"), "--trigger", "Don Quixote", "--n", "20", "--json"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    roles = [t["role"] for t in data["tokens"]]
    assert roles.count("star") == 1 and set(roles) <= {"star", "planet", "comet"}
    assert all({"token", "role", "cls_attention", "cls_attention_clean", "flip_drop"} <= set(t) for t in data["tokens"])
    assert len(data["inner_attention"]["lower"]) == len(data["tokens"])
