"""The scan's clean sentences (the package docstring, step 1): per class, short sentences the model gets right,
split (seeded) into a search set and a disjoint held-out set; and the one seeded way a candidate is inserted into
them, the same places for every candidate."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import insert_trigger
from trojanscope.errors import TrojanScopeError
from trojanscope.models.forward import batched_forward

if TYPE_CHECKING:
    from trojanscope.analysis.scan import ScanConfig


@dataclass
class CleanSets:
    search: dict[int, list[str]]  # class -> sentences the model gets right
    verify: dict[int, list[str]]
    num_labels: int


def clean_sets(loaded: Any, data: TextDataset, cfg: ScanConfig) -> CleanSets:
    """Per class, ``n_search`` + ``n_verify`` short sentences the model classifies correctly (seeded, disjoint).
    (The caller checks the data's task: :meth:`LoadedModel.check_task`.)"""
    num_labels = loaded.num_labels
    data.require_classes(2, "the scan's clean data")
    rng = random.Random(cfg.seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    short = [i for i in order if len(data.texts[i].split()) <= cfg.max_words]
    need = cfg.n_search + cfg.n_verify
    # predict only what could be used: up to 3x the need per class
    per_class: dict[int, list[int]] = {}
    for i in short:
        lst = per_class.setdefault(data.labels[i], [])
        if len(lst) < 3 * need:
            lst.append(i)
    pool = [i for lst in per_class.values() for i in lst]
    right: set[int] = set()  # no sentence short enough: nothing to predict, and the error below says so
    if pool:
        res = batched_forward(loaded.model, loaded.tokenizer, [data.texts[i] for i in pool], batch_size=cfg.batch_size)
        right = {i for i, p in zip(pool, res.preds) if int(p) == data.labels[i]}
    search, verify = {}, {}
    for c in sorted(set(data.labels)):
        good = [i for i in per_class.get(c, []) if i in right]
        if len(good) < need:
            raise TrojanScopeError(
                f"the scan needs {need} clean sentences of class {c} (of at most {cfg.max_words} words) that the "
                f"model classifies correctly ({cfg.n_search} to search, {cfg.n_verify} held out to verify); the data "
                f"has {len(good)}. Give more clean data, lower --n-search / --n-verify, or allow longer sentences "
                f"(--max-words)")
        search[c] = [data.texts[i] for i in good[: cfg.n_search]]
        verify[c] = [data.texts[i] for i in good[cfg.n_search: need]]
    return CleanSets(search, verify, num_labels)


def _inserted(sentences: Sequence[str], trigger: str, seed: int, combination: bool = False):
    """``trigger`` inserted once into every sentence at a random position seeded by the sentence's index (the
    same places for every candidate, so candidates are compared on equal terms)."""
    return [insert_trigger(s, trigger, 1, "random", rng=random.Random(seed * 7919 + j), combination=combination)
            for j, s in enumerate(sentences)]


def _subsets(sets: dict[int, list[str]], n: int) -> dict[int, list[str]]:
    return {c: s[:n] for c, s in sets.items()}
