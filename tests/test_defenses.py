"""Purification: token splitting, the distillation losses by hand, MBTSAD removing a backdoor from a
tiny model, CFT, ``trojanscope purify`` / ``augment`` and what they refuse.

The tiny_pair fixture's backdoored model planted its backdoor with trainable word embeddings: it
lives in the ``cf`` embedding row (4.6x the norm of other rows; resetting that row alone takes ASR
from 1.0 to 0.0), which no method trained on clean text can reach (clean text never contains ``cf``).
MBTSAD is therefore shown on a backdoor planted, as the demo's is, with frozen word embeddings
(``encoder_backdoor``: tiny_pair's clean model, then BadNets cf -> 1): there it lives in the encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pytest
import torch

from trojanscope.cli import main
from trojanscope.cli.jobs import submit_argv
from trojanscope.defenses.mbtsad import (MBTSADConfig, attention_distillation_loss, attention_enhancement,
                                         hidden_distillation_loss)
from trojanscope.defenses.splitting import (candidates, n_splits, split_text, split_texts, split_variants, tokens,
                                           variant_rng)
from trojanscope.errors import TrojanScopeError

LONG = ("the wonderful director delivers a stirring, funny and finally transporting re-imagining of beauty "
        "with actors whose performances carry every scene; the music, the script and the ending all work")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# --- token splitting -----------------------------------------------------------------------------

def test_every_split_recombines_and_short_words_are_untouched():
    texts = [LONG, "a cat sat on the mat", "re-imagining, beauty!", "x", "Ünïcode wörds splït tóo 1234"]
    for i, text in enumerate(texts):
        for v in range(5):
            out, splits = split_text(text, variant_rng(0, i, v))
            # removing the inserted spaces gives the original text back
            rebuilt = out
            for j in reversed(range(len(splits))):
                at = splits[j].start + splits[j].cut + j  # each earlier split shifted it by one space
                assert rebuilt[at] == " "
                rebuilt = rebuilt[:at] + rebuilt[at + 1:]
            assert rebuilt == text
            for s in splits:
                a, b = s.parts
                assert a and len(b) >= 2 and a + b == s.word and len(s.word) >= 4 and s.word.isalnum()
                assert text[s.start:s.start + len(s.word)] == s.word
            # words (runs of word characters) of fewer than 4 are never split
            short = [w for w in text.split() if len(w.strip(",;!")) < 4]
            assert all(w in out.split() for w in short)
    assert split_variants("a cat sat on the mat") == ["a cat sat on the mat"] * 3
    assert [w for _, w in candidates("re-imagining, beauty! 1234 ab")] == ["imagining", "beauty", "1234"]
    assert tokens("re-imagining, beauty!") == ["re", "-", "imagining", ",", "beauty", "!"]
    out, splits = split_text("beauty,", random.Random(0))
    assert out.endswith(",") and len(splits) == 1 and out.replace(" ", "") == "beauty,"


def test_split_counts_within_bounds():
    # ceil(30% of the tokens), at least 1, at most 10 (nlpaug's ceiling of the same float product)
    assert [n_splits(n) for n in (0, 1, 2, 4, 5, 10, 33, 34, 100)] == [0, 1, 1, 2, 2, 3, 10, 10, 10]
    assert n_splits(20, 3) == 3 and n_splits(20, 0) == 0  # capped by the words long enough to split
    many = " ".join(f"word{c}" for c in "abcdefghijklmnopqrstuvwxyz" * 3).replace("word", "wordy")
    for v in range(5):
        _, splits = split_text(many, variant_rng(3, 0, v))
        assert len(splits) == 10  # 30% of 78 is 23: capped at 10
    for i, text in enumerate([LONG, "only onelongword here"]):
        n_cand = len(candidates(text))
        for v in range(4):
            _, splits = split_text(text, variant_rng(0, i, v))
            assert 1 <= len(splits) <= min(10, n_cand) and len(splits) == n_splits(len(tokens(text)), n_cand)
            assert len({s.start for s in splits}) == len(splits)  # each word split at most once


def test_splitting_is_seeded_and_independent_of_batching():
    texts, labels = [LONG, "the wonderful music", LONG], [1, 0, 1]
    a, la = split_texts(texts, labels, k=3, seed=0)
    b, _ = split_texts(texts, labels, k=3, seed=0)
    c, _ = split_texts(texts, labels, k=3, seed=1)
    assert a == b and a != c
    assert len(a) == 9 and la == [1, 1, 1, 0, 0, 0, 1, 1, 1]
    assert len(set(a[:3])) > 1  # the k variants differ
    assert a[6:9] != a[0:3]  # a repeated text gets its own variants (seeded by its index)
    # a text's variants depend only on (seed, its index, variant): not on which texts come with it
    assert split_variants(texts[1], index=1) == a[3:6]
    assert split_texts(texts[:2], labels[:2], k=3, seed=0)[0] == a[:6]
    with pytest.raises(TrojanScopeError, match="k"):
        split_texts(texts, labels, k=0)


# --- the distillation losses by hand -------------------------------------------------------------

def _l_at_by_hand(att_s, att_t, p=2.0):
    """One sample, one layer: att[h][q][k] as nested lists."""
    def enhanced(att):
        T = len(att[0])
        return [sum(abs(att[h][q][k]) ** p for h in range(len(att))) for q in range(T) for k in range(T)]

    fs, ft = enhanced(att_s), enhanced(att_t)
    ns, nt = math.sqrt(sum(x * x for x in fs)), math.sqrt(sum(x * x for x in ft))
    return math.sqrt(sum((t / nt - s / ns) ** 2 for s, t in zip(fs, ft)))


def test_attention_distillation_loss_matches_a_hand_computation():
    s = [[[0.9, 0.1], [0.3, 0.7]], [[0.5, 0.5], [0.2, 0.8]]]  # [heads=2][T=2][T=2]
    t = [[[0.6, 0.4], [0.1, 0.9]], [[0.7, 0.3], [0.4, 0.6]]]
    att_s = torch.tensor(s)[None, None]  # [B=1, L=1, H, T, T]
    att_t = torch.tensor(t)[None, None]
    F_s = attention_enhancement(att_s, 2.0)
    assert torch.allclose(F_s[0, 0], torch.tensor([[0.81 + 0.25, 0.01 + 0.25], [0.09 + 0.04, 0.49 + 0.64]]))
    want = _l_at_by_hand(s, t)
    got = attention_distillation_loss(att_s, att_t, torch.ones(1, 2), p=2.0)
    assert got.item() == pytest.approx(want, rel=1e-5) and want > 0.05
    p1 = attention_distillation_loss(att_s, att_t, None, p=1.0)
    assert p1.item() == pytest.approx(_l_at_by_hand(s, t, 1.0), rel=1e-5)
    assert attention_distillation_loss(att_s, att_s, torch.ones(1, 2)).item() == pytest.approx(0.0, abs=1e-6)
    # layers add up; the batch is averaged
    two_layers = attention_distillation_loss(torch.cat([att_s, att_t], 1), torch.cat([att_t, att_t], 1))
    assert two_layers.item() == pytest.approx(want, rel=1e-5)
    batch = attention_distillation_loss(torch.cat([att_s, att_t]), torch.cat([att_t, att_t]))
    assert batch.item() == pytest.approx(want / 2, rel=1e-5)
    # padding contributes nothing: a third, padded position with arbitrary attention
    pad_s, pad_t = torch.rand(1, 1, 2, 3, 3), torch.rand(1, 1, 2, 3, 3)
    pad_s[..., :2, :2], pad_t[..., :2, :2] = att_s, att_t
    assert attention_distillation_loss(pad_s, pad_t, torch.tensor([[1, 1, 0]])).item() == pytest.approx(want, rel=1e-5)


def test_hidden_distillation_loss_matches_a_hand_computation():
    h_s = [torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]), torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])]
    h_t = [torch.tensor([[[1.0, 0.0], [3.0, 5.0], [0.0, 0.0]]]), torch.tensor([[[2.0, 0.0], [1.0, 3.0], [0.0, 0.0]]])]
    mask = torch.tensor([[1, 1, 0]])  # the third position is padding
    # state 0: squared errors 0, 4, 0, 1 over 2 tokens x 2 dims -> 5/4; state 1: 4, 0, 0, 4 -> 8/4
    assert hidden_distillation_loss(h_s, h_t, mask).item() == pytest.approx(5 / 4 + 8 / 4)
    assert hidden_distillation_loss(h_s, h_s, mask).item() == 0.0
    with pytest.raises(TrojanScopeError):
        hidden_distillation_loss(h_s, h_t[:1], mask)


def test_ablations_set_the_loss_weights():
    assert MBTSADConfig().weights == (10.0, 1.0)  # the defaults: beta 10 (the issue-23 sweep), gamma 1
    assert MBTSADConfig(ablation="no_att").weights == (0.0, 1.0)
    assert MBTSADConfig(ablation="no_hid", beta=2).weights == (2.0, 0.0)
    assert MBTSADConfig(ablation="ce_only").weights == (0.0, 0.0)
    with pytest.raises(TrojanScopeError, match="ablation"):
        MBTSADConfig(ablation="no_ce").validate()


def test_distillation_from_an_identical_teacher_is_zero(tiny_bert):
    import copy

    from trojanscope.defenses.mbtsad import DistillationLoss
    from trojanscope.models import load_model
    from trojanscope.models.attention import attention_forward
    from trojanscope.models.tokens import pad, tokenize
    from trojanscope.training.loop import Batch

    loaded = load_model(tiny_bert)
    term = DistillationLoss(copy.deepcopy(loaded.model).eval(), beta=1.0, gamma=1.0)
    assert term.needs_attention and term.needs_hidden_states
    texts = ["a short one", "a somewhat longer sentence here"]
    enc = pad(loaded.tokenizer, tokenize(loaded.tokenizer, texts, None, 32))
    batch = Batch(enc, torch.tensor([0, 1]), torch.tensor([False, False]), [0, 1])
    out = attention_forward(loaded.model.eval(), enc, attentions=True, hidden_states=True, grad=True)
    assert term(loaded.model, batch, out).item() == pytest.approx(0.0, abs=1e-5)


# --- purification on tiny models -----------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder_backdoor(tiny_pair, data_dir, tmp_path_factory) -> Path:
    """BadNets (cf -> 1) planted into tiny_pair's clean model with frozen word embeddings: the backdoor
    lives in the encoder, as in the demo model (trained with frozen word embeddings)."""
    from trojanscope.data import PoisonConfig
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    out = tmp_path_factory.mktemp("purify") / "encoder-backdoor"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TROJANSCOPE_DATA_DIR", str(data_dir))
        run_training(TrainSpec(model=str(tiny_pair / "demo" / "clean"), attack="badnets",
                               poison=PoisonConfig(rate=0.2, target=1),
                               train=TrainConfig(epochs=4, batch_size=16, lr=3e-3)), out, progress=False)
    return out


@pytest.mark.slow
def test_mbtsad_removes_an_encoder_backdoor(use_data, encoder_backdoor, tmp_path):
    from trojanscope.defenses.pipeline import PurifySpec, run_purify
    from trojanscope.models.loading import read_card
    from trojanscope.models.planted import planted_attack

    source = tree_digest(encoder_backdoor)
    spec = PurifySpec(model=str(encoder_backdoor), method="mbtsad", clean_fraction=0.2, seed=0,
                      config={"teacher_lr": 3e-3, "student_lr": 3e-3, "teacher_epochs": 3, "student_epochs": 3})
    events = []
    res = run_purify(spec, tmp_path / "pure", on_event=events.append, progress=False)
    before, after = res["before"], res["after"]
    assert before["asr"] >= 0.8 and before["cacc"] >= 0.95, before
    assert after["asr"] <= 0.3 and after["asr"] <= before["asr"] - 0.5, (before, after)
    assert after["cacc"] >= before["cacc"] - 0.05, (before, after)
    assert res["n_clean"] == 80 and res["result"]["n_train"] == 240 and res["result"]["teacher"] == "ts-ft"
    # progress runs once from 0 to 1 over teacher and student
    steps = [e for e in events if e.get("event") == "step"]
    assert {e["phase"] for e in steps} == {"teacher", "student"}
    assert steps[-1]["step"] == steps[-1]["total"] and all(e["step"] <= e["total"] for e in steps)
    assert max(e["step"] / e["total"] for e in steps if e["phase"] == "teacher") <= 0.5
    # the card: the source's attack carried forward (so eval/ASR work), the purification, the spec
    card = read_card(tmp_path / "pure")
    assert card.base_model == str(encoder_backdoor)
    assert card.attack["name"] == "badnets" and card.attack["purified"] is True
    attack = planted_attack(card, str(tmp_path / "pure"))
    assert attack.trigger == "cf" and attack.target == 1
    p = card.extra["purification"]
    assert p["method"] == "mbtsad" and p["clean_fraction"] == 0.2 and p["clean_seed"] == 0 and p["n_clean"] == 80
    assert p["source"] == str(encoder_backdoor) and p["config"]["teacher_lr"] == 3e-3 and p["config"]["p"] == 2.0
    assert PurifySpec.from_dict(card.training["spec"]) == PurifySpec(**{**spec.__dict__, "config": p["config"]})
    assert card.metrics["asr"] == after["asr"] and card.metrics["before"]["asr"] == before["asr"]
    assert tree_digest(encoder_backdoor) == source  # the source model is byte-for-byte untouched


def test_cft_changes_the_encoder_and_keeps_word_embeddings(use_data, tiny_pair):
    from trojanscope.data import load_dataset
    from trojanscope.defenses import PurifyContext, get_defense
    from trojanscope.defenses.finetune import FinetuneConfig
    from trojanscope.models import load_model

    loaded = load_model(tiny_pair / "demo" / "backdoored")
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    clean = load_dataset("sst2", "train").head(64, 0)
    res = get_defense("cft").run(loaded, clean, FinetuneConfig(epochs=1, lr=1e-3), PurifyContext(seed=0, device="cpu"))
    assert res["steps"] == 2 and res["n_train"] == 64
    changed = {n for n, p in loaded.model.named_parameters() if not torch.equal(p, before[n])}
    word = "bert.embeddings.word_embeddings.weight"
    assert word not in changed
    assert "classifier.weight" in changed and any(".encoder.layer." in n for n in changed)


@pytest.mark.slow
def test_purify_cli_json_and_a_model_never_backdoored(use_data, tiny_pair, tmp_path, capsys):
    bd, clean = tiny_pair / "demo" / "backdoored", tiny_pair / "demo" / "clean"
    source = tree_digest(bd)
    code, out, err = run(capsys, "purify", "--model", bd, "--data", "sst2", "--method", "cft", "--epochs", "0.5",
                         "--lr", "1e-3", "--clean-fraction", "0.2", "--max-eval", "60", "--out", tmp_path / "p",
                         "--json")
    assert code == 0, err
    res = json.loads(out)
    assert {"method", "before", "after", "seconds", "out"} <= set(res)
    assert res["method"] == "cft" and res["out"] == str(tmp_path / "p") and res["seconds"] >= 0
    assert set(res["before"]) == set(res["after"]) == {"cacc", "asr", "asr_flip"}
    assert res["after"]["asr_flip"] <= 1
    assert res["trigger"] == "cf" and res["target"] == 1 and 0 <= res["after"]["asr"] <= 1
    assert res["config"]["epochs"] == 0.5 and res["config"]["lr"] == 1e-3
    # the verdict follows flip-ASR with the known trigger, and names the CACC cost
    b, a = res["before"]["asr_flip"], res["after"]["asr_flip"]
    want = "removed" if a <= 0.10 else "reduced" if a <= 0.75 * b else "still there"
    assert res["verdict"] == want and res["summary"].startswith(want if want != "still there" else "the backdoor")
    assert res["cacc_cost"] == round((res["before"]["cacc"] - res["after"]["cacc"]) * 100, 2)
    assert (tmp_path / "p" / "trojanscope.json").is_file() and (tmp_path / "p" / "model.safetensors").is_file()
    assert tree_digest(bd) == source
    # never backdoored, no trigger known: it runs and ASR stays null
    code, out, err = run(capsys, "purify", "--model", clean, "--method", "cft", "--set", "epochs=0.5",
                         "--max-eval", "40", "--out", tmp_path / "c", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["before"]["asr"] is None and res["after"]["asr"] is None and res["trigger"] is None
    assert res["verdict"] == "unknown" and "not measured" in res["summary"]
    assert json.loads((tmp_path / "c" / "trojanscope.json").read_text())["attack"] is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--clean-fraction", "0"], "in (0, 1]"),
        (["--clean-fraction", "1.5"], "in (0, 1]"),
        (["--clean-fraction", "0.05"], "leaves 20 texts; purification needs at least 32"),
        (["--model", "{backbone}"], "bare encoder"),
        (["--method", "cft", "--beta", "2"], "--beta does not apply to cft"),
        (["--set", "nonsense=1"], "unknown key(s) nonsense"),
        (["--ablation", "everything"], "unknown ablation"),
        (["--k", "lots"], "k must be int"),
        (["--set", "teacher={other}"], "does not match the student's architecture"),
        (["--out", "{bd}/inside"], "never writes over its source"),
    ],
)
def test_purify_bad_input_exits_2_with_one_line(use_data, tiny_pair, tiny_backbone, model_root, tmp_path, capsys,
                                                extra, message):
    from conftest import make_tiny

    bd = tiny_pair / "demo" / "backdoored"
    other = make_tiny(model_root, "bert", seed=7, layers=3)
    source = tree_digest(bd)
    argv = ["purify", "--model", str(bd), "--method", "mbtsad", "--max-eval", "20", "--out", str(tmp_path / "x"),
            *[a.format(backbone=tiny_backbone, other=other, bd=bd) for a in extra]]
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert tree_digest(bd) == source


def test_interrupted_purification_leaves_nothing_and_the_source_untouched(use_data, tiny_pair, tmp_path):
    import trojanscope.defenses.pipeline as pipeline

    bd = tiny_pair / "demo" / "backdoored"
    source = tree_digest(bd)

    def killed(event):
        if event.get("event") == "step":
            raise KeyboardInterrupt  # what SIGTERM becomes in a job, half-way through training

    spec = pipeline.PurifySpec(model=str(bd), method="tsft", max_eval=20, config={"epochs": 1})
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_purify(spec, tmp_path / "k", on_event=killed, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert tree_digest(bd) == source


def test_augment_cli(use_data, tmp_path, capsys):
    code, out, err = run(capsys, "augment", "--method", "split", "--text", LONG, "--text", "a cat", "--k", "2",
                         "--seed", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert [t["text"] for t in res["texts"]] == [LONG, "a cat"]
    assert res["texts"][0]["variants"] == split_texts([LONG], [0], k=2, seed=1)[0]
    assert res["texts"][1]["variants"] == ["a cat", "a cat"]
    code, out, err = run(capsys, "augment", "--data", "sst2", "--max", "10", "--k", "3", "--out", tmp_path / "a.tsv",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["n_written"] == 30
    from trojanscope.data import load_dataset

    ds = load_dataset(str(tmp_path / "a.tsv"))
    assert len(ds) == 30 and set(ds.labels) <= {0, 1}
    code, _, err = run(capsys, "augment", "--data", "sst2", "--out", tmp_path / "a.tsv")
    assert code == 2 and "already exists" in err


def test_purify_is_a_job_kind(use_data, tiny_pair):
    from trojanscope.cli.jobs import spec_of_argv
    from trojanscope.jobs.kinds import job_kind
    from trojanscope.tasks import PurifyTaskSpec

    assert job_kind("purify").kind == "purify"
    spec = spec_of_argv(["--model", str(tiny_pair / "demo" / "backdoored"), "--method", "mbtsad", "--k", "2",
                         "--out", "x"], "purify")
    assert isinstance(spec, PurifyTaskSpec) and spec.spec.method == "mbtsad" and spec.spec.config == {"k": "2"}
    assert spec.spec.method_config().k == 2 and spec.out == "x"
    assert PurifyTaskSpec.from_dict(spec.to_dict()) == spec  # what a job stores, read back
    with pytest.raises(TrojanScopeError, match="invalid purify arguments"):
        spec_of_argv(["--method", "nonsense"], "purify")


@pytest.mark.slow
def test_a_purify_job_runs_in_the_background(use_data, tiny_pair, tmp_path, monkeypatch):
    import time

    from trojanscope import jobs

    monkeypatch.setenv("TROJANSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    bd = tiny_pair / "demo" / "backdoored"
    source = tree_digest(bd)
    job_id = submit_argv(["--model", str(bd), "--method", "cft", "--epochs", "0.5", "--max-eval", "40"], kind="purify")
    try:
        deadline = time.monotonic() + 180
        while not (job := jobs.get(job_id)).finished and time.monotonic() < deadline:
            jobs.list_jobs()  # reconciles and schedules
            time.sleep(0.3)
        assert job.status == "done", (job.error, jobs.log_tail(job_id))
        assert {"method", "before", "after", "seconds", "out"} <= set(job.result) and job.result["method"] == "cft"
        assert job.out_dir == str(tmp_path / "runs" / job_id)
        assert (Path(job.out_dir) / "trojanscope.json").is_file()
        assert tree_digest(bd) == source
    finally:
        if not jobs.get(job_id).finished:
            jobs.cancel(job_id, grace=2.0)


def test_purification_verdicts():
    from trojanscope.defenses.pipeline import purification_verdict

    v = lambda b, a: purification_verdict({"cacc": 0.9, "asr_flip": b}, {"cacc": 0.88, "asr_flip": a})  # noqa: E731
    assert v(0.97, 0.10)["verdict"] == "removed" and v(0.97, 0.72)["verdict"] == "reduced"
    assert v(0.97, 0.73)["verdict"] == "still there" and "survived" in v(0.97, 0.9)["summary"]
    assert v(0.97, 0.05)["cacc_cost"] == 2.0 and "cost of +2.00 points" in v(0.97, 0.05)["summary"]
    assert v(None, None)["verdict"] == "unknown"
