"""Representation map (seed Fig. 3): where do triggered and augmented texts land in a model's
[CLS] space, and how far from the clean data?

For ``n`` clean test texts the map gathers the model's sentence representation
(``models.representation``, through the one batched forward) of: the clean texts; the same texts
with the trigger inserted as every other reader inserts it (``triggered``: the card's insertions, LWP's
combination words separately, seeded random positions; ``models.backdoor``); and one variant of each
under every chosen augmentation (``split``, ``eda``, ``aeda``, ``addtrig``: ``data.augment``). It
projects them to 2-D (UMAP by default; t-SNE as the seed drew it; PCA), and measures, in the full
representation space (not the 2-D picture):

- ``knn_ratio[set]``: the mean distance from each text of the set to its ``k`` nearest clean texts,
  divided by the same for clean texts (leave-one-out): 1 means "as close as clean texts are to each
  other", larger means further out of the clean distribution;
- ``silhouette[set]``: the silhouette score of clean vs the set (scikit-learn; -1..1, higher means
  the set forms its own cluster apart from the clean data).

So the seed's claim that token-split text lies outside the clean distribution, unlike EDA or AEDA,
is measured, not only drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from trojanscope.data.datasets import TextDataset
from trojanscope.errors import TrojanScopeError
from trojanscope.models.backdoor import Backdoor
from trojanscope.models.loading import LoadedModel

METHODS = ("umap", "tsne", "pca")
AUGMENTED = ("split", "eda", "aeda", "addtrig")


@dataclass
class MapConfig:
    """``n`` clean texts (and as many of every other set), the 2-D ``method``, the augmentations,
    ``k`` neighbours for the distance, one ``seed`` for every random choice."""

    n: int = 300
    method: str = "umap"
    augmentations: tuple[str, ...] = AUGMENTED
    representation: str = "cls"
    k: int = 10
    seed: int = 0
    batch_size: int = 64

    def validate(self) -> "MapConfig":
        if self.n < 10:
            raise TrojanScopeError(f"the map needs at least 10 clean texts, got n={self.n}")
        if self.method not in METHODS:
            raise TrojanScopeError(f"unknown map method {self.method!r}; allowed: {', '.join(METHODS)}")
        if not 1 <= self.k < self.n:
            raise TrojanScopeError(f"k must be in 1..{self.n - 1} (neighbours among the clean texts), got {self.k}")
        return self


@dataclass
class EmbedMap:
    """Per point: its set, text, 2-D coordinates and the model's prediction; per set, the distances."""

    model: str
    method: str
    trigger: str | None
    sets: list[str]
    texts: list[str]
    coords: np.ndarray  # [N, 2]
    preds: np.ndarray  # [N]
    knn_ratio: dict[str, float] = field(default_factory=dict)
    silhouette: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        """One row per set: its size, distance ratio, silhouette, and the share predicted as each class."""
        rows = []
        sets = np.asarray(self.sets)
        for s in dict.fromkeys(self.sets):
            sel = sets == s
            rows.append({"set": s, "n": int(sel.sum()), "knn_ratio": self.knn_ratio.get(s),
                         "silhouette": self.silhouette.get(s),
                         "predicted": {int(c): round(float((self.preds[sel] == c).mean()), 4)
                                       for c in np.unique(self.preds)}})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "trigger": self.trigger, "summary": self.summary(),
                "seconds": round(self.seconds, 2),
                "points": [{"set": s, "x": round(float(x), 4), "y": round(float(y), 4), "pred": int(p)}
                           for s, (x, y), p in zip(self.sets, self.coords, self.preds)]}


def map_texts(test: TextDataset, trigger: str | Backdoor | None, cfg: MapConfig) -> tuple[list[str], list[str]]:
    """``(texts, set names)``: ``n`` seeded clean test texts, then each other set in the same order.
    ``trigger``: the backdoor (``models.backdoor.resolve_backdoor``), or a bare trigger inserted once as
    a phrase; ``None``: no ``triggered`` set."""
    from trojanscope.data.augment import augmentations

    clean = test.head(cfg.n, cfg.seed)
    if len(clean) < 10:
        raise TrojanScopeError(f"the data has {len(clean)} texts; the map needs at least 10")
    texts, sets = list(clean.texts), ["clean"] * len(clean)
    backdoor = Backdoor(trigger) if isinstance(trigger, str) else trigger
    if backdoor is not None and backdoor.known:
        texts += backdoor.poison(clean, seed=cfg.seed, only_non_target=False).texts
        sets += ["triggered"] * len(clean)
    registry = augmentations()
    for name in cfg.augmentations:
        aug = registry.get(name)
        out, _ = aug.run(list(clean.texts), list(clean.labels), k=1, seed=cfg.seed)
        texts += out
        sets += [name] * len(out)
    return texts, sets


def project(reps: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of ``reps`` ``[N, d]`` by UMAP, t-SNE (scikit-learn) or PCA (scikit-learn)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(reps)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, random_state=seed, init="pca",
                    perplexity=float(min(30, max(5, len(reps) // 4)))).fit_transform(reps)
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": seeded means one thread
        return umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(reps) - 1)).fit_transform(reps)


def distances(reps: np.ndarray, sets: Sequence[str], k: int) -> tuple[dict[str, float], dict[str, float]]:
    """``knn_ratio`` and ``silhouette`` per non-clean set (see the module docstring)."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    sets = np.asarray(sets)
    clean = reps[sets == "clean"]
    nn = NearestNeighbors(n_neighbors=k + 1).fit(clean)
    d_clean, _ = nn.kneighbors(clean)
    base = float(d_clean[:, 1:].mean())  # leave-one-out: the first neighbour is the point itself
    ratio: dict[str, float] = {"clean": 1.0}
    sil: dict[str, float] = {}
    for s in dict.fromkeys(sets.tolist()):
        if s == "clean":
            continue
        part = reps[sets == s]
        d, _ = nn.kneighbors(part, n_neighbors=k)
        ratio[s] = round(float(d.mean()) / base, 4) if base > 0 else float("nan")
        both = np.concatenate([clean, part])
        labels = np.r_[np.zeros(len(clean)), np.ones(len(part))]
        sil[s] = round(float(silhouette_score(both, labels)), 4)
    return ratio, sil


def representation_map(loaded: LoadedModel, test: TextDataset, cfg: MapConfig | None = None, *,
                       trigger: str | None = None,
                       progress: Callable[[float, str], None] | None = None) -> EmbedMap:
    """The map of ``loaded`` on ``test``; the trigger is the given one or the card's (none: no
    ``triggered`` set)."""
    import time

    from trojanscope.models.backdoor import resolve_backdoor
    from trojanscope.models.forward import batched_forward, stack_kept
    from trojanscope.models.representation import check_representation, sentence_representation

    cfg = (cfg or MapConfig()).validate()
    loaded.require("classify", "the representation map (it colours points by prediction)")
    loaded.check_task(test, "the representation map")
    check_representation(loaded.model, cfg.representation)
    t0 = time.perf_counter()
    backdoor = resolve_backdoor(loaded, trigger=trigger, need_target=False)  # no target: every text gets it
    texts, sets = map_texts(test, backdoor, cfg)
    if progress:
        progress(0.1, f"encoding {len(texts)} texts")

    def keep(out, enc, idx):
        return sentence_representation(loaded.model, out.hidden_states[-1], cfg.representation).float().cpu()

    res = batched_forward(loaded.model, loaded.tokenizer, texts, keep=keep, hidden_states=True,
                          batch_size=cfg.batch_size, max_length=loaded.max_length)
    reps = stack_kept(res).numpy()
    if progress:
        progress(0.5, f"projecting with {cfg.method}")
    coords = project(reps, cfg.method, cfg.seed)
    ratio, sil = distances(reps, sets, cfg.k)
    if progress:
        progress(1.0, "done")
    return EmbedMap(loaded.source, cfg.method, backdoor.trigger, sets, texts, np.asarray(coords), res.preds, ratio,
                    sil, time.perf_counter() - t0)
