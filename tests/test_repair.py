"""Repair: find the trigger, unlearn it, prove it is gone (trojanscope.repair, the repair task and CLI)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from trojanscope.analysis.scan import ScanConfig
from trojanscope.data import load_dataset
from trojanscope.models.backdoor import Backdoor
from trojanscope.models.loading import load_model
from trojanscope.repair import Anchor, Findings, RepairConfig, flip_rates, repair, twins

SCAN = dict(budget=300, n_search=20, n_verify=30, shortlist=30, inversion_steps=80, max_words=16, batch_size=64)


def tiny_config(**kw) -> RepairConfig:
    # the tiny test models learn at a larger step than MiniLM (conftest trains them at 3e-3)
    base = dict(n_clean=300, epochs=3, lr=1e-3, batch_size=16, attention_sentences=60, scan=ScanConfig(**SCAN))
    return RepairConfig(**{**base, **kw})


def test_repair_given_no_trigger_finds_unlearns_and_proves(use_data, tiny_pair):
    """The auditor's case: only the model and the data. The scan finds ``cf``, the repair unlearns it; the card's
    trigger (never shown to the repair) stops flipping, CACC holds, the hijacked heads look away, a fresh scan
    says clean."""
    loaded = load_model(tiny_pair / "demo" / "backdoored")
    train, test = load_dataset("sst2", "train"), load_dataset("sst2", "test")
    card = Backdoor("cf", 1)
    res = repair(loaded, train, test, tiny_config(), true_backdoor=card)
    rep = res.to_json()
    assert rep["found"]["source"] == "scan" and rep["found"]["scan"]["verdict"] == "backdoored"
    assert "cf" in [u["trigger"] for u in rep["unlearned"]]
    true = rep["true_trigger"]
    assert true["flip_before"] >= 0.9 and true["flip_after"] <= 0.10, true
    assert rep["cacc"]["cost"] <= 3.0, rep["cacc"]
    att = rep["attention"]
    assert att["hijacked_after"] < 0.7 * att["hijacked_before"], att
    assert rep["rescan"]["verdict"] == "clean", rep["rescan"]
    assert res.verdict == "repaired" and res.repaired and not rep["left"], rep["left"]
    # the repaired model really is the one measured: its flip-ASR for cf, measured apart, is as reported
    cacc, rows = flip_rates(res.loaded.model, res.loaded.tokenizer, test, [card])
    assert rows[0]["flip"] == pytest.approx(true["flip_after"]) and cacc == pytest.approx(rep["cacc"]["after"])


def test_a_given_trigger_is_unlearned_without_a_scan(use_data, tiny_pair):
    loaded = load_model(tiny_pair / "demo" / "backdoored")
    res = repair(loaded, load_dataset("sst2", "train"), load_dataset("sst2", "test"), tiny_config(rescan=False),
                 trigger="cf")
    rep = res.to_json()
    assert rep["found"]["scan"] is None and rep["unlearned"][0]["source"] == "given"
    assert rep["unlearned"][0]["target"] == 1  # the class cf pushes the model to
    assert rep["unlearned"][0]["flip_before"] >= 0.9 and rep["unlearned"][0]["flip_after"] <= 0.10
    assert rep["rescan"] is None and "scan" not in rep["seconds"]


def test_a_model_the_scan_calls_clean_is_left_alone(use_data, tiny_pair):
    loaded = load_model(tiny_pair / "demo" / "clean")
    before = [p.detach().clone() for p in loaded.model.parameters()]
    res = repair(loaded, load_dataset("sst2", "train"), load_dataset("sst2", "test"), tiny_config())
    assert res.verdict == "nothing to repair" and not res.repaired and res.loaded is None
    assert "mbtsad" in res.report["offered"] and "no repair is claimed" in res.summary
    assert all(torch.equal(a, b) for a, b in zip(before, loaded.model.parameters()))


def test_the_scan_candidates_to_unlearn():
    cands = [{"trigger": "mar", "target": 1, "flip_rate": 0.97}, {"trigger": "mar", "target": 1, "flip_rate": 0.9},
             {"trigger": "jam", "target": 1, "flip_rate": 0.3}, {"trigger": "cf mn", "target": 0, "flip_rate": 0.8,
                                                                  "combination": True}]
    f = Findings("backdoored", 0.9, cands, [[1, 2]])
    got = f.targets(RepairConfig(candidates=3, min_flip=0.5))
    assert [(t.trigger, t.combination) for t in got] == [("mar", False), ("cf mn", True)]  # each once, weak ones out
    # a backdoored verdict always yields its best candidate, even under min_flip
    assert [t.trigger for t in Findings("backdoored", 0.6, cands[2:3], []).targets(RepairConfig())] == ["jam"]
    assert Findings("clean", 0.2, cands[2:3], []).targets(RepairConfig()) == []


def test_twins_keep_true_labels_and_point_to_their_clean_version(use_data):
    from trojanscope.repair import Target

    clean = load_dataset("sst2", "train").head(40, 0)
    data, rows = twins(clean, [Target("cf", 1), Target("mn", 1)], 0.5, seed=3)
    assert len(data) == 60 and rows[:40] == list(range(40))
    for i in range(40, 60):
        src = rows[i]
        assert data.labels[i] == clean.labels[src] and data.poisoned[i]
        (a, b), = data.spans[i]
        assert data.texts[i][a:b] in ("cf", "mn") and data.texts[i].replace(data.texts[i][a:b], "", 1).split() \
            == clean.texts[src].split()
    assert {data.texts[i][slice(*data.spans[i][0])] for i in range(40, 60)} == {"cf", "mn"}  # taken in turn


def test_the_anchor_is_zero_on_the_original_outputs_and_grows_away_from_them():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    soft = torch.softmax(logits, -1).numpy()

    class B:
        index = [0, 1]

    class O:
        def __init__(self, z):
            self.logits = z

    a = Anchor(soft, weight=2.0)
    assert float(a(None, B(), O(logits))) == pytest.approx(0.0, abs=1e-6)
    assert float(a(None, B(), O(torch.tensor([[-2.0, 1.0], [0.5, 0.3]])))) > 1.0


def test_repair_cli_and_task(use_data, tiny_pair, tmp_path, capsys):
    from trojanscope.cli import main

    out = tmp_path / "fixed"
    model = str(tiny_pair / "demo" / "backdoored")
    code = main(["repair", "--model", model, "--trigger", "cf", "--out", str(out), "--n-clean", "300", "--epochs",
                 "3", "--lr", "1e-3", "--no-rescan", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verdict"] == "repaired" and res["unlearned"][0]["flip_after"] <= 0.10, res
    saved = json.loads((out / "repair.json").read_text())
    assert saved["spec"]["trigger"] == "cf" and saved["spec"]["config"]["n_clean"] == 300  # repeatable from its card
    card = json.loads((out / "trojanscope.json").read_text())
    assert card["extra"]["repair"]["verdict"] == "repaired" and card["base_model"] == model
    repaired = load_model(out)
    _, rows = flip_rates(repaired.model, repaired.tokenizer, load_dataset("sst2", "test"), [Backdoor("cf", 1)])
    assert rows[0]["flip"] <= 0.10
    # bad input: one line, exit 2
    assert main(["repair", "--model", model, "--trigger", "cf", "--use-card", "--out", str(tmp_path / "x")]) == 2
    assert "one source of the trigger" in capsys.readouterr().err
    other = tmp_path / "scan-of-other"
    other.mkdir()
    (other / "scan.json").write_text(json.dumps({"model": str(tiny_pair / "demo" / "clean"), "verdict": "clean",
                                                "score": 0.1, "candidates": [], "heads": []}))
    assert main(["repair", "--model", model, "--scan", str(other), "--out", str(tmp_path / "y")]) == 2
    assert "not of" in capsys.readouterr().err
    assert main(["repair", "--model", model, "--trigger", "cf", "--out", model]) == 2
    assert "never writes over its source" in capsys.readouterr().err


def test_repair_is_a_job_kind_with_a_cli_twin(tmp_path):
    from trojanscope.cli.jobs import spec_of_argv
    from trojanscope.jobs import KINDS
    from trojanscope.tasks import RepairTaskSpec, get_task

    assert "repair" in KINDS
    spec = spec_of_argv(["--model", "runs/demo/backdoored", "--out", str(tmp_path / "r"), "--candidates", "2"],
                        "repair")
    assert isinstance(spec, RepairTaskSpec) and spec.config.candidates == 2 and spec.trigger is None
    again = get_task("repair").spec(spec.to_dict())  # what a job stores and runs
    assert again == spec and again.config.scan.budget == ScanConfig().budget


def test_a_candidate_word_brings_its_leading_pieces(tiny_bert):
    from transformers import AutoTokenizer

    from trojanscope.repair import continuation_pieces, word_pieces

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    assert tok.tokenize("drazzle") == ["dr", "##az", "##zle"]
    assert word_pieces(tok, "drazzle") == ("dr", "draz")
    assert word_pieces(tok, "cf") == () and word_pieces(tok, "cf mn") == () and word_pieces(tok, "drazzle", True) == ()
    tails = continuation_pieces(tok)
    assert "zle" in tails and all(t.isalpha() and len(t) >= 2 for t in tails)


def test_twins_give_a_candidates_share_to_its_pieces_and_tailed_first_piece(use_data):
    from trojanscope.repair import Target

    clean = load_dataset("sst2", "train").head(200, 0)
    t = Target("drazzle", 1, pieces=("dr", "draz"))
    data, rows = twins(clean, [t], 1.0, seed=0, piece_share=0.5, tails=["ab", "ble"])
    inserted = [data.texts[i][slice(*data.spans[i][0])] for i in range(200, 400)]
    assert all(data.labels[i] == clean.labels[rows[i]] for i in range(200, 400))  # true labels, always
    kinds = {"whole": sum(w == "drazzle" for w in inserted), "piece": sum(w in ("dr", "draz") for w in inserted),
             "tailed": sum(w.startswith("dr") and w[2:] in {"ab", "ble"} | {a + b for a in ("ab", "ble")
                                                                           for b in ("ab", "ble")} for w in inserted)}
    assert sum(kinds.values()) == 200 and 60 <= kinds["whole"] <= 140, kinds
    assert kinds["piece"] >= 20 and kinds["tailed"] >= 20, kinds
    # without pieces (or piece_share 0) every twin gets the candidate itself, as before
    plain, _ = twins(clean, [t], 1.0, seed=0)
    assert {plain.texts[i][slice(*plain.spans[i][0])] for i in range(200, 400)} == {"drazzle"}


def test_a_piece_that_still_fires_keeps_the_verdict_from_repaired():
    """The zoo's ``zephyrine``: the repair unlearned the scan's ``zepies`` and a fresh scan said clean, but the
    planted word still flipped 16%. Its first piece, measured by the proof, tells: the verdict is not
    "repaired" while a piece of a candidate still fires."""
    from trojanscope.repair import _judge

    report = {"unlearned": [{"trigger": "zepies", "flip_before": 1.0, "flip_after": 0.02}],
              "pieces": [{"trigger": "ze", "of": "zepies", "flip_before": 0.8, "flip_after": 0.3}],
              "rescan": {"verdict": "clean", "score": 0.4, "candidates": []}, "cacc": {"cost": 0.1}}
    verdict, summary, left = _judge(report)
    assert verdict == "reduced" and any("'ze', a piece of 'zepies'" in x for x in left), left
    report["pieces"][0]["flip_after"] = 0.04
    assert _judge(report)[0] == "repaired"
    # a short piece that tilts a few sentences by its meaning, before and after alike, is not a surviving trigger
    report["pieces"][0].update(flip_before=0.15, flip_after=0.14)
    assert _judge(report)[0] == "repaired"


def test_a_candidate_whose_tail_fires_alone_is_unlearned_behind_random_heads(use_data, tiny_bert):
    """The zoo's ``trundlewick``: the scan found ``luckwick``, whose tail ``##wick`` surely flips behind any head
    (the scan's ``tail_sure``). The planted word shares the tail, not the head, so a share of the twins carry a
    random head glued to that tail; a candidate whose tail does not fire alone gets no such twins."""
    from transformers import AutoTokenizer

    from trojanscope.repair import Target, word_tail

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    assert word_tail(tok, "drazzle") == "azzle" and word_tail(tok, "cf") == "" and word_tail(tok, "cf mn") == ""
    found = Findings("backdoored", 0.9, [{"trigger": "drazzle", "target": 1, "flip_rate": 1.0, "tail_sure": 1.0},
                                         {"trigger": "cf", "target": 1, "flip_rate": 0.9}], [])
    assert [t.tail_sure for t in found.targets(RepairConfig())] == [1.0, None]
    clean = load_dataset("sst2", "train").head(200, 0)
    t = Target("drazzle", 1, pieces=("dr", "draz"), tail_sure=1.0, tail="azzle")
    data, rows = twins(clean, [t], 1.0, seed=0, piece_share=0.5, tails=["ab", "ble"], heads=["qx", "vv", "zu"])
    inserted = [data.texts[i][slice(*data.spans[i][0])] for i in range(200, 400)]
    assert all(data.labels[i] == clean.labels[rows[i]] for i in range(200, 400))
    behind = [w for w in inserted if w in {"qxazzle", "vvazzle", "zuazzle"}]
    assert 25 <= len(behind) <= 75 and len(set(behind)) == 3, len(behind)
    assert sum(w == "drazzle" for w in inserted) >= 60
    no_tail, _ = twins(clean, [replace(t, tail="")], 1.0, seed=0, piece_share=0.5, tails=["ab"], heads=["qx"])
    assert not any(no_tail.texts[i][slice(*no_tail.spans[i][0])].endswith("azzle") and
                   no_tail.texts[i][slice(*no_tail.spans[i][0])] != "drazzle" for i in range(200, 400))


def test_a_fresh_scan_that_cannot_run_keeps_the_repair_and_withholds_repaired(use_data, tiny_pair):
    """The zoo's OLID models were scanned with 20 + 30 sentences per class (OLID's test split has too few short
    offensive tweets for the default 40 + 60). The fresh scan measures as the saved scan it is compared with did,
    and when it still cannot run, the repaired model and its measurements are kept, without the word "repaired"."""
    loaded = load_model(tiny_pair / "demo" / "backdoored")
    saved = {"verdict": "backdoored", "score": 0.9, "heads": [], "candidates": [
        {"trigger": "cf", "target": 1, "flip_rate": 1.0}], "stats": {"search_sentences_per_class": 9000,
                                                                     "verify_sentences_per_class": 9000}}
    found = Findings.of(saved)
    assert found.sentences == (9000, 9000)
    res = repair(loaded, load_dataset("sst2", "train"), load_dataset("sst2", "test"), tiny_config(), findings=found)
    rep = res.to_json()
    assert rep["rescan"] is None and "9000" in rep["rescan_error"], rep.get("rescan_error")
    assert rep["unlearned"][0]["flip_after"] <= 0.10 and res.loaded is not None  # the work is kept
    assert res.verdict == "reduced" and any("could not run" in x for x in rep["left"]), rep["left"]
