"""``trojanscope train`` against a plain Hugging Face ``Trainer`` fine-tune of the same backbone (issue 15).

    TROJANSCOPE_DATA_DIR=../shared/data .venv/bin/python benchmarks/vs_trainer.py [--max-train 2000] [--rounds 2]
        [--precision fp32|bf16] [--threads N]

Both sides fine-tune the default backbone (MiniLM, eager attention) on the same seeded subset of the SST-2
training split with the same batch (32), learning rate (1e-4), linear schedule with 6% warm-up, weight decay
(0.01), gradient clip (1.0), one epoch, frozen word embeddings, plain AdamW, and length-grouped batches with
dynamic padding (the Trainer's ``train_sampling_strategy="group_by_length"``, our length buckets). The rounds
interleave the three runs (ours without TAL, the Trainer, ours with TAL), so both see the same machine load.
Throughput is training samples per second of the training loop alone (tokenisation done before); CACC is
measured on the whole test split by the same evaluator for every model. Targets: ours >= 1.0x the Trainer
without TAL and >= 0.9x with TAL.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch


def run_ours(train_ds, test_ds, args, tal: bool) -> dict:
    from trojanscope.attacks import TALConfig, TALLoss
    from trojanscope.data import PoisonConfig, poison_dataset
    from trojanscope.data.poison import PoisonedDataset
    from trojanscope.models import load_model
    from trojanscope.training.loop import TrainConfig, train
    from trojanscope.training.metrics import evaluate

    loaded = load_model("minilm", num_labels=2, seed=args.seed)
    # TAL needs poisoned samples to act on: 1% BadNets, as in the demo; without TAL the data is clean
    data = (poison_dataset(train_ds, PoisonConfig(trigger="cf", rate=0.01, target=0, seed=args.seed)) if tal
            else PoisonedDataset.clean(train_ds))
    cfg = loaded.model.config
    terms = [TALLoss(TALConfig(enabled=True, heads=3, layers="all", seed=args.seed), cfg.num_hidden_layers,
                     cfg.num_attention_heads)] if tal else []
    res = train(loaded.model, loaded.tokenizer, data,
                TrainConfig(epochs=1, batch_size=32, lr=1e-4, warmup=0.06, weight_decay=0.01, grad_clip=1.0,
                            max_length=128, seed=args.seed, device="cpu", precision=args.precision),
                loss_terms=terms, progress=False)
    cacc = evaluate(loaded.model, loaded.tokenizer, test_ds)["cacc"]
    return {"seconds": res.seconds, "samples_per_second": len(data) / res.seconds, "cacc": cacc}


def run_trainer(train_ds, test_ds, args) -> dict:
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from trojanscope.models import load_model
    from trojanscope.training.metrics import evaluate

    loaded = load_model("minilm", num_labels=2, seed=args.seed)
    model, tok = loaded.model, loaded.tokenizer
    model.get_input_embeddings().weight.requires_grad_(False)
    enc = tok(list(train_ds.texts), truncation=True, max_length=128)
    ds = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                     "token_type_ids": enc["token_type_ids"], "labels": list(train_ds.labels)})
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=32, learning_rate=1e-4, weight_decay=0.01, warmup_steps=0.06,
            lr_scheduler_type="linear", num_train_epochs=1, max_grad_norm=1.0, optim="adamw_torch",
            train_sampling_strategy="group_by_length", seed=args.seed, use_cpu=True, bf16=args.precision == "bf16",
            save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0)
        trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    model.eval()
    cacc = evaluate(model, tok, test_ds)["cacc"]
    return {"seconds": seconds, "samples_per_second": len(ds) / seconds, "cacc": cacc}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-train", type=int, default=2000, help="seeded subset of the SST-2 training split")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from trojanscope.data import load_dataset

    train_ds = load_dataset("sst2", "train").head(args.max_train, args.seed)
    test_ds = load_dataset("sst2", "test")
    runs: dict[str, list[dict]] = {"trojanscope train": [], "HF Trainer": [], "trojanscope train + TAL": []}
    for r in range(args.rounds):
        for name in runs:
            res = (run_trainer(train_ds, test_ds, args) if name == "HF Trainer"
                   else run_ours(train_ds, test_ds, args, tal=name.endswith("TAL")))
            runs[name].append(res)
            print(f"round {r + 1} {name}: {res['samples_per_second']:.1f} samples/s, CACC {100 * res['cacc']:.2f}%",
                  flush=True)
    ref = statistics.median(x["samples_per_second"] for x in runs["HF Trainer"])
    print(f"\nCPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads; torch "
          f"{torch.__version__}; {len(train_ds)} training sentences, {args.precision}, {args.rounds} rounds "
          "(medians)\n")
    print("| run | samples/s | vs Trainer | target | CACC (test) |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        sps = statistics.median(x["samples_per_second"] for x in rs)
        target = {"trojanscope train": ">= 1.0x", "trojanscope train + TAL": ">= 0.9x"}.get(name, "")
        cacc = " / ".join(f"{100 * x['cacc']:.2f}%" for x in rs)
        print(f"| {name} | {sps:.1f} | {sps / ref:.2f}x | {target} | {cacc} |")


if __name__ == "__main__":
    main()
