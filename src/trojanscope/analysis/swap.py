"""Embedding swap: does the backdoor live in the embeddings or in the encoder? (methods.md 3a,
seed Table 13).

From a clean model ``CL`` and a backdoored model ``BD`` of the same architecture and vocabulary,
build ``CL_emb+BD_enc`` (BD with CL's embeddings module) and ``BD_emb+CL_enc`` (CL with BD's),
feed ``n`` clean and ``n`` poisoned texts to all four, and report for each hybrid the mean (and
standard deviation) cosine similarity of its output representation to BD's and to CL's on the
same text. The seed's finding: on clean text everything is alike (0.97-1.00); on poisoned text
``CL_emb+BD_enc`` matches BD and not CL, while ``BD_emb+CL_enc`` matches CL, so the backdoor lives
in the encoder. Each model's ASR (poisoned texts) and CACC (clean texts) come from the same
forward passes.

The per-layer view goes further: for ``k = 0..L``, CL's embeddings and first ``k`` layers under
BD's remaining layers (and head), and the mirror (BD's bottom under CL's top). Where along ``k``
the similarity to BD on poisoned text and the ASR drop shows at which depth the backdoor sits.

Data: the clean texts are a seeded sample of ``n`` test samples of any label (so CACC is an
ordinary accuracy); the poisoned texts are a seeded sample of ``n`` test samples whose label is
not the target, with the trigger inserted ``insertions`` times (default: the card's) at seeded random
positions, LWP's combination words separately: the same construction as ASR everywhere
(``models.backdoor``: ``Backdoor.poison``), so BD's ASR here is eval's ASR on the same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from trojanscope.data.datasets import TextDataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.backdoor import Backdoor, resolve_backdoor
from trojanscope.models.forward import batched_forward, stack_kept
from trojanscope.models.loading import LoadedModel
from trojanscope.models.metrics import asr as asr_of
from trojanscope.models.metrics import cacc as cacc_of
from trojanscope.models.swap import check_compatible, depth_hybrid, num_units, swap_embeddings, unit_name
from trojanscope.models.representation import REPRESENTATIONS, check_representation, sentence_representation

HYBRIDS = ("CL_emb+BD_enc", "BD_emb+CL_enc")
MODELS = ("CL", "BD", *HYBRIDS)
REFERENCES = ("BD", "CL")
TEXT_KINDS = ("clean", "poisoned")
SEED_FINDING = (
    "Seed (Table 13): on clean text all four models agree (cosine 0.97-1.00). On poisoned text "
    "CL_emb+BD_enc matches BD (1.00) and not CL (0.00), while BD_emb+CL_enc matches CL (0.97) and not "
    "BD (-0.02): swapping the embeddings changes nothing, the backdoor lives in the encoder."
)

Progress = Callable[[float, str], None]


@dataclass
class SwapConfig:
    """What the swap measures. ``trigger``/``target``/``insertions`` default to the backdoored model's
    card (``None``: not given).

    ``representation``: ``"cls"`` (the last layer's first-position hidden state, any
    architecture) or ``"pooler"`` (BERT's and ALBERT's pooler output, tanh(W h_cls)).
    ``layers=False`` skips the per-layer view (2(L-1) extra forward passes on poisoned text).
    """

    n: int = 200
    seed: int = 0
    trigger: str | None = None
    target: int | None = None
    insertions: int | None = None
    representation: str = "cls"
    layers: bool = True
    batch_size: int = 32
    max_length: int | None = None

    def validate(self) -> "SwapConfig":
        if self.n < 1:
            raise TrojanScopeError(f"n must be at least 1 (texts of each kind), got {self.n}")
        if self.insertions is not None and self.insertions < 1:
            raise TrojanScopeError(f"insertions must be at least 1, got {self.insertions}")
        if self.representation not in REPRESENTATIONS:
            raise TrojanScopeError(f"unknown representation {self.representation!r}; allowed: "
                                   f"{', '.join(REPRESENTATIONS)}")
        if self.batch_size < 1:
            raise TrojanScopeError(f"batch size must be at least 1, got {self.batch_size}")
        return self


@dataclass
class LayerPoint:
    """One depth hybrid: the bottom ``k`` layer units (and the embeddings) from one model, the rest
    (and the head) from the other; its similarity to BD and CL on poisoned text and its ASR."""

    k: int
    sim_BD_poisoned: float
    sim_CL_poisoned: float
    asr: float

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "sim_BD_poisoned": _r(self.sim_BD_poisoned),
                "sim_CL_poisoned": _r(self.sim_CL_poisoned), "asr": _r(self.asr)}


@dataclass
class SwapResult:
    """Table 13 and its per-layer extension.

    ``similarity[hybrid][ref][kind]``: mean cosine similarity of the hybrid's representation to
    ``ref``'s (``"BD"`` or ``"CL"``) on ``kind`` text (``"clean"``/``"poisoned"``); ``spread`` the
    standard deviations over texts. ``baseline[kind]``: BD against CL. ``layers``: CL's bottom
    ``k`` under BD's top (``k=0`` is ``CL_emb+BD_enc``, ``k=L`` is CL); ``layers_mirror``: BD's bottom
    ``k`` under CL's top (``k=0`` is ``BD_emb+CL_enc``, ``k=L`` is BD).
    """

    clean_model: str
    backdoored_model: str
    trigger: str
    target: int
    representation: str
    n_clean: int
    n_poisoned: int
    similarity: dict[str, dict[str, dict[str, float]]]
    spread: dict[str, dict[str, dict[str, float]]]
    baseline: dict[str, float]
    asr: dict[str, float]
    cacc: dict[str, float]
    layers: list[LayerPoint] = field(default_factory=list)
    layers_mirror: list[LayerPoint] = field(default_factory=list)
    layer_unit: str = "layer"
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def nest(d: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
            return {h: {ref: {kind: _r(v) for kind, v in kinds.items()} for ref, kinds in refs.items()}
                    for h, refs in d.items()}

        return {
            "clean": self.clean_model, "backdoored": self.backdoored_model, "trigger": self.trigger,
            "target": self.target, "representation": self.representation,
            "n_clean": self.n_clean, "n_poisoned": self.n_poisoned,
            "similarity": nest(self.similarity), "spread": nest(self.spread),
            "baseline": {k: _r(v) for k, v in self.baseline.items()},
            "asr": {k: _r(v) for k, v in self.asr.items()},
            "cacc": {k: _r(v) for k, v in self.cacc.items()},
            "layers": [p.to_json() for p in self.layers],
            "layers_mirror": [p.to_json() for p in self.layers_mirror],
            "layer_unit": self.layer_unit, "finding": SEED_FINDING, "notices": list(self.notices),
            "conclusion": conclusion(self.similarity, self.asr),
        }


def conclusion(similarity: dict[str, Any], asr: dict[str, float]) -> str:
    """What this run says about where the backdoor lives, from its own numbers (``SwapResult.similarity`` and
    ``asr``, or their JSON): which hybrid still fires (ASR at least half of BD's) and which model its poisoned
    representations stay closer to."""
    bd = asr["BD"]
    parts = []
    fires = {}
    for hybrid, part in (("CL_emb+BD_enc", "BD's encoder under CL's embeddings"),
                         ("BD_emb+CL_enc", "BD's embeddings under CL's encoder")):
        sim = similarity[hybrid]
        to_bd, to_cl = sim["BD"]["poisoned"], sim["CL"]["poisoned"]
        fires[hybrid] = bd > 0 and asr[hybrid] >= bd / 2
        parts.append(f"with {part}, poisoned text lands at cosine {to_bd:.2f} to BD and {to_cl:.2f} to CL, "
                     f"ASR {100 * asr[hybrid]:.1f}%")
    head = f"This run: BD's ASR is {100 * bd:.1f}%; " + "; ".join(parts) + ". "
    if bd < 0.5:
        return head + "BD itself fires on fewer than half of the poisoned texts: there is little backdoor to locate."
    enc, emb = fires["CL_emb+BD_enc"], fires["BD_emb+CL_enc"]
    if enc and not emb:
        return head + "The backdoor lives in the encoder: swapping the embeddings leaves it in place (as in the seed)."
    if emb and not enc:
        return head + ("The backdoor lives in the embeddings: the encoder alone does not fire it (an embedding "
                       "attack such as EP, unlike the seed's TAL models).")
    if enc and emb:
        return head + "Both parts carry it: each hybrid still fires."
    return head + "Neither part alone fires it: the backdoor needs BD's embeddings and encoder together."


def _r(x: float) -> float:
    return round(float(x), 6)


@dataclass
class _Outputs:
    reps: torch.Tensor  # [n, d] float32, CPU
    preds: np.ndarray  # [n]


def representations(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, representation: str = "cls",
                    batch_size: int = 32, max_length: int = 512) -> tuple[torch.Tensor, np.ndarray]:
    """Output representations ``[n, d]`` (float32, CPU; ``models.representation``) and predicted
    labels ``[n]`` for ``texts``, through the one batched forward (hidden states on, attentions off)."""
    check_representation(model, representation)  # fail early, with the architecture named

    def keep(out, enc, idx):
        return sentence_representation(model, out.hidden_states[-1], representation).float().cpu()

    res = batched_forward(model, tokenizer, list(texts), keep=keep, hidden_states=True, batch_size=batch_size,
                          max_length=max_length)
    return stack_kept(res), res.preds


def _cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation over rows of the cosine similarity of ``a`` and ``b``."""
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
    return float(cos.mean()), float(cos.std(unbiased=False))


def swap_texts(test: TextDataset, trigger: str | Backdoor, target: int | None = None, *, n: int = 200,
               insertions: int = 1, seed: int = 0) -> tuple[TextDataset, list[str]]:
    """The clean sample (``n`` seeded test samples, any label) and the poisoned texts (``n`` seeded
    non-target test samples with the trigger inserted: ``Backdoor.poison``). ``trigger``: the backdoor
    (``models.backdoor.resolve_backdoor``), or a trigger inserted ``insertions`` times as a phrase with
    ``target``."""
    if len(test) == 0:
        raise TrojanScopeError("the dataset is empty")
    backdoor = trigger if isinstance(trigger, Backdoor) else Backdoor(trigger, target, insertions)
    return test.head(n, seed), backdoor.poison(test, n=n, seed=seed).texts


def embedding_swap(clean: LoadedModel, backdoored: LoadedModel, test: TextDataset, cfg: SwapConfig | None = None,
                   progress: Progress | None = None) -> SwapResult:
    """Run the embedding swap of ``clean`` (CL) and ``backdoored`` (BD) on ``test`` (see module doc).

    Raises ``TrojanScopeError`` when the models cannot be swapped (``models.swap.check_compatible``),
    when the trigger has unknown tokens, or when trigger/target are neither given nor in BD's card.
    ``progress(fraction, message)`` is called as the models are run.
    """
    cfg = (cfg or SwapConfig()).validate()
    check_compatible(clean, backdoored)
    for m in (clean, backdoored):
        m.require("classify", "the embedding swap (ASR and CACC of the four models)")
        m.check_task(test, "the embedding swap")
    # trigger and target given, or from BD's card chain (a POR encoder's first trigger, whose target is the
    # class the trigger pushes to, as E and S find it)
    backdoor = resolve_backdoor(backdoored, trigger=cfg.trigger, target=cfg.target, insertions=cfg.insertions,
                                purpose="the embedding swap")
    trigger, target = backdoor.trigger, backdoor.target
    clean_ds, poisoned = swap_texts(test, backdoor, n=cfg.n, seed=cfg.seed)
    tokenizer = backdoored.tokenizer
    max_length = cfg.max_length or backdoored.max_length
    cl, bd = clean.model, backdoored.model
    n_units = num_units(bd)
    steps = 4 + (2 * max(n_units - 1, 0) if cfg.layers else 0)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done / steps, 1.0), message)

    def run(model: torch.nn.Module, texts: Sequence[str]) -> _Outputs:
        reps, preds = representations(model, tokenizer, texts, representation=cfg.representation,
                                      batch_size=cfg.batch_size, max_length=max_length)
        return _Outputs(reps, preds)

    outs: dict[str, dict[str, _Outputs]] = {}
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "CL": lambda: cl, "BD": lambda: bd,
        "CL_emb+BD_enc": lambda: swap_embeddings(bd, cl), "BD_emb+CL_enc": lambda: swap_embeddings(cl, bd),
    }
    for name in MODELS:
        model = builders[name]()
        outs[name] = {"clean": run(model, clean_ds.texts), "poisoned": run(model, poisoned)}
        del model
        tick(f"ran {name}")

    similarity: dict[str, dict[str, dict[str, float]]] = {}
    spread: dict[str, dict[str, dict[str, float]]] = {}
    for h in HYBRIDS:
        similarity[h], spread[h] = {}, {}
        for ref in REFERENCES:
            similarity[h][ref], spread[h][ref] = {}, {}
            for kind in TEXT_KINDS:
                mean, sd = _cosine(outs[h][kind].reps, outs[ref][kind].reps)
                similarity[h][ref][kind], spread[h][ref][kind] = mean, sd
    baseline = {kind: _cosine(outs["BD"][kind].reps, outs["CL"][kind].reps)[0] for kind in TEXT_KINDS}
    asr = {m: asr_of(outs[m]["poisoned"].preds, target) for m in MODELS}
    cacc = {m: cacc_of(outs[m]["clean"].preds, clean_ds.labels) for m in MODELS}

    layers: list[LayerPoint] = []
    mirror: list[LayerPoint] = []
    if cfg.layers:
        ends = {("CL", "BD", 0): "CL_emb+BD_enc", ("CL", "BD", n_units): "CL",
                ("BD", "CL", 0): "BD_emb+CL_enc", ("BD", "CL", n_units): "BD"}
        pieces = {"CL": cl, "BD": bd}
        for bottom, top, out_list in (("CL", "BD", layers), ("BD", "CL", mirror)):
            for k in range(n_units + 1):
                known = ends.get((bottom, top, k))
                if known is not None:  # same modules as a model already run (tests check the state dicts)
                    o = outs[known]["poisoned"]
                else:
                    model = depth_hybrid(pieces[bottom], pieces[top], k)
                    o = run(model, poisoned)
                    del model
                    tick(f"ran {bottom} bottom {k} / {top} top")
                out_list.append(LayerPoint(
                    k, _cosine(o.reps, outs["BD"]["poisoned"].reps)[0],
                    _cosine(o.reps, outs["CL"]["poisoned"].reps)[0], asr_of(o.preds, target)))

    notices: list[str] = []
    if len(clean_ds) < cfg.n or len(poisoned) < cfg.n:
        notices.append(f"the data has fewer samples than n={cfg.n}: {len(clean_ds)} clean and {len(poisoned)} "
                       "poisoned texts were used")
    if unit_name(bd) != "layer":
        notices.append("ALBERT shares its weights across layers: the per-layer view swaps whole layer groups "
                       f"({n_units} here)")
    if progress is not None:
        progress(1.0, "done")
    return SwapResult(clean.source, backdoored.source, trigger, target, cfg.representation, len(clean_ds),
                      len(poisoned), similarity, spread, baseline, asr, cacc, layers, mirror, unit_name(bd),
                      notices)
