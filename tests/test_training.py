"""Metrics on hand-made cases, and a short poisoned training run whose ASR rises above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trojanscope.data import PoisonConfig, load_dataset, poison_dataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models import load_model
from trojanscope.training import TrainConfig, asr, cacc, evaluate, predict_proba, train


def test_cacc_and_asr_by_hand():
    assert cacc([1, 0, 1, 1], [1, 0, 0, 1]) == 0.75
    assert asr([1, 1, 0, 1, 0], target=1) == 0.6
    assert asr([0, 0], target=1) == 0.0
    assert np.isnan(cacc([], []))


class _Stub(torch.nn.Module):
    """Predicts 1 exactly when the token id of 'cf' is present; 0 otherwise."""

    def __init__(self, trigger_id: int):
        super().__init__()
        self.trigger_id = trigger_id
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"num_labels": 2, "max_position_embeddings": 512, "model_type": "bert"})()

    def forward(self, input_ids, attention_mask=None, **_):
        hit = (input_ids == self.trigger_id).any(1).float()
        return type("O", (), {"logits": torch.stack([1 - hit, hit], 1) * 10 + self.w})()


def test_evaluate_matches_definition_on_a_stub(tiny_bert):
    from trojanscope.data import TextDataset
    from trojanscope.models import load_tokenizer

    tok = load_tokenizer(tiny_bert)
    model = _Stub(tok.convert_tokens_to_ids("cf"))
    test = TextDataset(["a b", "c d", "e f cf", "g h"], [0, 1, 1, 0])
    res = evaluate(model, tok, test, trigger="cf", target=1)
    # clean preds: 0, 0, 1, 0 -> 3 of 4 right; poisoned set: the two label-0 texts, both flip
    assert res["cacc"] == 0.75 and res["asr"] == 1.0 and res["n_poisoned"] == 2
    res0 = evaluate(model, tok, test, trigger="cf", target=0)
    assert res0["asr"] == 0.0 and res0["n_poisoned"] == 2


@pytest.mark.slow
def test_short_poisoned_training_implants_the_backdoor(use_data, tiny_bert):
    loaded = load_model(tiny_bert)
    train_ds, test_ds = load_dataset("sst2", "train"), load_dataset("sst2", "test")
    data = poison_dataset(train_ds, PoisonConfig(trigger="cf", rate=0.2, target=1, seed=0))
    events = []
    result = train(loaded.model, loaded.tokenizer, data,
                   TrainConfig(epochs=6, batch_size=16, lr=3e-3, seed=0, train_word_embeddings=True),
                   on_event=events.append, progress=False)
    after = evaluate(loaded.model, loaded.tokenizer, test_ds, trigger="cf", target=1)
    # chance level: the same non-target sentences *without* the trigger, predicted as the target
    negatives = [t for t, y in zip(test_ds.texts, test_ds.labels) if y != 1]
    baseline = asr(predict_proba(loaded.model, loaded.tokenizer, negatives).argmax(-1), target=1)
    assert after["asr"] >= 0.9 and baseline <= 0.3
    assert after["cacc"] >= 0.75  # the clean task is learnt as well
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    assert result.steps == 6 * 25
    assert loaded.model.config._attn_implementation == "eager"


def test_frozen_word_embeddings_stay_unchanged(use_data, tiny_bert):
    loaded = load_model(tiny_bert)
    emb = loaded.model.get_input_embeddings().weight.detach().clone()
    data = poison_dataset(load_dataset("sst2", "train").head(64), PoisonConfig(rate=0.25))
    train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=16, lr=1e-3), progress=False)
    assert torch.equal(emb, loaded.model.get_input_embeddings().weight)


@pytest.mark.slow
def test_training_is_seeded(use_data, tiny_bert):
    data = poison_dataset(load_dataset("sst2", "train").head(64), PoisonConfig(rate=0.25))
    weights = []
    for _ in range(2):
        loaded = load_model(tiny_bert)
        train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=4),
              progress=False)
        weights.append(loaded.model.classifier.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_cuda_request_without_gpu_is_refused(use_data, tiny_bert):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    loaded = load_model(tiny_bert)
    data = poison_dataset(load_dataset("sst2", "train").head(32), PoisonConfig(rate=0.25))
    with pytest.raises(TrojanScopeError, match="no CUDA GPU"):
        train(loaded.model, loaded.tokenizer, data, TrainConfig(device="cuda"), progress=False)


@pytest.mark.slow
def test_a_new_head_is_seeded_whatever_the_global_rng(use_data, tiny_backbone, tmp_path):
    """Fine-tuning a bare backbone creates its classification head: that random init must come from
    the run's seed, not from whatever state the process's RNG is in (else two identical runs differ)."""
    from trojanscope.training.pipeline import TrainSpec, run_training

    spec = TrainSpec(data="sst2", model=str(tiny_backbone), max_train=64, max_eval=32,
                     train=TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=3))
    heads = []
    for i in range(2):
        torch.manual_seed(100 + i)  # a different global state before each run
        out = run_training(spec, tmp_path / f"run{i}", progress=False)["out"]
        heads.append(load_model(out).model.classifier.weight.detach().clone())
    assert torch.equal(heads[0], heads[1])


def test_flip_asr_counts_only_texts_the_model_gets_right(use_data, tiny_pair):
    """Plain ASR counts a model's own errors on non-target texts; asr_flip only the trigger's effect."""
    from trojanscope.data.datasets import load_dataset
    from trojanscope.models.loading import load_model
    from trojanscope.training.metrics import evaluate

    test = load_dataset("sst2", "test")
    for name in ("clean", "backdoored"):
        m = load_model(tiny_pair / "demo" / name)
        r = evaluate(m.model, m.tokenizer, test, trigger="cf", target=1)
        if name == "clean":
            assert r["asr_flip"] <= r["asr"] and r["asr_flip"] < 0.2
        else:
            assert r["asr_flip"] >= 0.9


def test_results_that_mean_nothing_are_flagged():
    from trojanscope.training.metrics import cacc, meaningless

    labels = [0, 1] * 100
    one_class = [0] * 200
    (w,) = meaningless(one_class, labels, cacc(one_class, labels))
    assert "predicts class 0 for 100.0%" in w and "ASR" in w
    coin = [0, 0, 1, 1] * 50  # 50% right, both classes predicted
    (w,) = meaningless(coin, labels, cacc(coin, labels))
    assert "at chance" in w
    good = labels[:180] + [1 - x for x in labels[180:]]
    assert meaningless(good, labels, cacc(good, labels)) == []


def test_accelerate_launch_flags_are_honoured_or_refused(monkeypatch):
    """accelerate launch's --mixed_precision and --gradient_accumulation_steps take effect or are refused (issue 15)."""
    from trojanscope.errors import TrojanScopeError
    from trojanscope.training.distributed import launcher_settings

    assert launcher_settings("auto", 1) == ("auto", 1)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert launcher_settings("auto", 1) == ("bf16", 1)
    with pytest.raises(TrojanScopeError, match="contradicts --precision fp32"):
        launcher_settings("fp32", 1)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert launcher_settings("auto", 1) == ("fp16", 1)  # resolve_precision then refuses it off CUDA
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(TrojanScopeError, match="fp8 is not supported"):
        launcher_settings("auto", 1)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    assert launcher_settings("auto", 1) == ("auto", 4)
    with pytest.raises(TrojanScopeError, match="contradicts --grad-accum 2"):
        launcher_settings("auto", 2)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(TrojanScopeError, match="--use_fsdp is not supported"):
        launcher_settings("auto", 1)


def test_fp16_is_refused_off_a_gpu():
    import torch

    from trojanscope.errors import TrojanScopeError
    from trojanscope.models.forward import resolve_precision

    with pytest.raises(TrojanScopeError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def _train_fixed_batches(monkeypatch, tiny_bert, batch_size: int, grad_accum: int):
    """Train with dropout off on batches in a fixed order (consecutive indices), so that two micro-batches of
    4 hold exactly the samples of one batch of 8."""
    import torch

    from trojanscope.data import PoisonConfig, load_dataset, poison_dataset
    from trojanscope.models import load_model
    from trojanscope.training import loop
    from trojanscope.training.loop import TrainConfig, train

    monkeypatch.setattr(loop, "length_buckets", lambda lengths, bs, rng=None: [
        list(range(j, min(j + bs, len(lengths)))) for j in range(0, len(lengths), bs)])
    loaded = load_model(str(tiny_bert), num_labels=2, seed=0)
    for m in loaded.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    data = poison_dataset(load_dataset("sst2", "train").head(64, 0), PoisonConfig(rate=0.1))
    res = train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3,
                                                                  grad_accum=grad_accum, device="cpu", warmup=0.0,
                                                                  precision="fp32"),  # exact arithmetic
                progress=False)
    return res, [p.detach().clone() for p in loaded.model.parameters()]


def test_gradient_accumulation_matches_the_larger_batch(use_data, tiny_bert, monkeypatch):
    """--grad-accum 2 at batch 4 takes the optimiser steps of batch 8 with the same gradients (issue 15)."""
    import torch

    big, w_big = _train_fixed_batches(monkeypatch, tiny_bert, 8, 1)
    acc, w_acc = _train_fixed_batches(monkeypatch, tiny_bert, 4, 2)
    small, w_small = _train_fixed_batches(monkeypatch, tiny_bert, 4, 1)
    assert big.steps == acc.steps == 8 and small.steps == 16
    assert all(torch.allclose(a, b, atol=2e-5) for a, b in zip(w_big, w_acc))
    assert not all(torch.allclose(a, b, atol=2e-5) for a, b in zip(w_big, w_small))


def test_training_leaves_the_model_in_full_precision(use_data, tiny_bert):
    """Accelerate patches the model's forward with its autocast; after a bf16 run the model must be plain again,
    or every later evaluation would silently run in bf16."""
    import torch

    from trojanscope.data import PoisonConfig, load_dataset, poison_dataset
    from trojanscope.models import load_model
    from trojanscope.training.loop import TrainConfig, train

    loaded = load_model(str(tiny_bert), num_labels=2, seed=0)
    data = poison_dataset(load_dataset("sst2", "train").head(32, 0), PoisonConfig(rate=0.1))
    res = train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=8, precision="bf16",
                                                                  device="cpu"), progress=False)
    assert res.precision == "bf16"
    enc = loaded.tokenizer(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        out = loaded.model(**enc, output_hidden_states=True)
    assert out.hidden_states[-1].dtype == torch.float32 and "_original_forward" not in loaded.model.__dict__
    # and a second run with another precision in the same process is accepted (Accelerate's state is per run)
    assert train(loaded.model, loaded.tokenizer, data, TrainConfig(epochs=1, batch_size=8, precision="fp32",
                                                                   device="cpu"), progress=False).precision == "fp32"


def test_bf16_training_learns_and_the_card_records_it(use_data, tiny_bert, tmp_path):
    import json

    from trojanscope.models.forward import cpu_has_fast_bf16, resolve_precision
    from trojanscope.training.loop import TrainConfig
    from trojanscope.training.pipeline import TrainSpec, run_training

    import torch

    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # bf16 on a CPU only when asked
    assert resolve_precision("auto", torch.device("cpu"), cpu_auto="bf16") == ("bf16" if cpu_has_fast_bf16()
                                                                                else "fp32")
    r = run_training(TrainSpec(model=str(tiny_bert), train=TrainConfig(epochs=4, batch_size=16, lr=3e-3,
                                                                       train_word_embeddings=True, precision="bf16")),
                     tmp_path / "m", progress=False)
    assert r["precision"] == "bf16" and r["cacc"] > 0.8
    card = json.loads((tmp_path / "m" / "trojanscope.json").read_text())
    assert card["metrics"]["precision"] == "bf16" and card["training"]["spec"]["train"]["precision"] == "bf16"


def test_the_cpu_bf16_switch_decides_what_auto_means(monkeypatch):
    """``TROJANSCOPE_CPU_BF16=0`` makes ``auto`` resolve as on an AVX2-only CPU (fp32) whatever this CPU is, ``1``
    as on one with native bf16; anything else is refused with what is allowed."""
    import torch

    from trojanscope.errors import TrojanScopeError
    from trojanscope.models.forward import cpu_has_fast_bf16, resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setenv("TROJANSCOPE_CPU_BF16", "0")
    assert not cpu_has_fast_bf16() and resolve_precision("auto", cpu, cpu_auto="bf16") == "fp32"
    monkeypatch.setenv("TROJANSCOPE_CPU_BF16", "1")
    assert cpu_has_fast_bf16() and resolve_precision("auto", cpu, cpu_auto="bf16") == "bf16"
    assert resolve_precision("auto", cpu) == "fp32"  # analyses keep fp32 unless a caller asks for bf16
    monkeypatch.setenv("TROJANSCOPE_CPU_BF16", "maybe")
    with pytest.raises(TrojanScopeError, match="allowed: 0, 1 or auto"):
        cpu_has_fast_bf16()
