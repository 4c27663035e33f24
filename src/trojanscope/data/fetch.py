"""Fetch a named benchmark that is not on disk from the Hugging Face hub (the ``datasets`` library) and cache it
in the project's own layout (``<data dir>/<name>/{train,dev,test}.tsv``, UTF-8, header ``text<TAB>label``).

The hub sources give the same splits as the team's local copies where the hub has them (sizes as their hub cards
give them; no download was tried from the offline machine this was written on):

- ``sst2``: ``SetFit/sst2`` (the sentence-level SST-2 of the backdoor papers: 6,920 / 872 / 1,821);
- ``olid``: ``tweet_eval``, config ``offensive`` (OLID / OffensEval 2019 task A: 11,916 / 1,324 / 860; the
  local copy has one sentence fewer in each split);
- ``agnews``: ``fancyzhx/ag_news``: its test split (7,600), and from its 120,000 training articles a seeded
  11,106 for train and another 10,000 for dev (the local copy's sizes; not the same articles);
- ``imdb``: ``stanfordnlp/imdb``: a seeded 2,500 of its test reviews, ``<br />`` removed.

Offline (or without the hub), the error names what to download and where to put it.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trojanscope.errors import TrojanScopeError


@dataclass(frozen=True)
class HubSource:
    repo: str
    config: str | None = None
    splits: dict[str, str] = field(default_factory=dict)  # our split -> hub split (or "hub:N@seed" subsets)
    text: str = "text"
    label: str = "label"


HUB_SOURCES: dict[str, HubSource] = {
    "sst2": HubSource("SetFit/sst2", None, {"train": "train", "dev": "validation", "test": "test"}),
    "olid": HubSource("tweet_eval", "offensive", {"train": "train", "dev": "validation", "test": "test"}),
    "agnews": HubSource("fancyzhx/ag_news", None, {"train": "train[0:11106]", "dev": "train[11106:21106]",
                                                   "test": "test"}),
    "imdb": HubSource("stanfordnlp/imdb", None, {"sample": "test[0:2500]"}),
}
SEED = 0  # the seeded subsets (agnews train/dev, imdb sample) shuffle the hub split with this seed first


def clean_text(text: str) -> str:
    """One line: ``<br />`` and every tab or newline become spaces."""
    text = re.sub(r"<br\s*/?>", " ", str(text))
    return " ".join(text.split())


def _rows(ds: Any, spec: str, src: HubSource) -> list[tuple[str, int]]:
    """The rows of hub split ``spec`` (``name`` or ``name[a:b]``: a seeded-shuffle slice)."""
    m = re.fullmatch(r"(\w+)(?:\[(\d+):(\d+)\])?", spec)
    if m is None:
        raise ValueError(spec)
    part = ds[m.group(1)]
    texts, labels = list(part[src.text]), [int(x) for x in part[src.label]]
    order = list(range(len(texts)))
    if m.group(2) is not None:
        random.Random(SEED).shuffle(order)
        order = order[int(m.group(2)): int(m.group(3))]
    return [(clean_text(texts[i]), labels[i]) for i in order]


def download_hint(name: str, root: Path) -> str:
    from trojanscope.data.datasets import REGISTRY

    src = HUB_SOURCES[name]
    files = ", ".join(f"{root / p}" for p in sorted(set(REGISTRY[name].files.values())))
    hub = src.repo + (f" (config {src.config})" if src.config else "")
    return (f"download it on a machine with internet (`trojanscope fetch {name}`, or the hub dataset {hub}) and put "
            f"{files} there (header text<TAB>label, integer labels), or set TROJANSCOPE_DATA_DIR to a directory "
            "that holds it")


def fetch_benchmark(name: str, root: str | os.PathLike = "data", *, progress: bool = True,
                    loader: Callable[..., Any] | None = None) -> Path:
    """Download benchmark ``name`` into ``root/<name>/`` in the project's layout; return ``root``.

    ``loader`` replaces ``datasets.load_dataset`` (tests). Each file is written to a temporary name and renamed,
    so an interrupted download leaves no half file.
    """
    from trojanscope.data.datasets import REGISTRY

    if name not in HUB_SOURCES:
        raise TrojanScopeError(f"no hub source for {name!r}; fetchable: {', '.join(HUB_SOURCES)}")
    root = Path(root)
    src = HUB_SOURCES[name]
    if loader is None:
        try:
            from datasets import load_dataset as loader  # the well-kept library for the hub's datasets
        except ImportError as e:
            raise TrojanScopeError(f"{name} is not on disk and fetching it needs the 'datasets' package "
                                   f"(pip install datasets); or {download_hint(name, root)}") from e
    if progress:
        import sys

        print(f"fetching {name} from the Hugging Face hub ({src.repo}) into {root / name}/", file=sys.stderr)
    try:
        ds = loader(src.repo, src.config) if src.config else loader(src.repo)
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, ...: one line that says what to do
        raise TrojanScopeError(f"dataset {name!r} is not on disk and could not be fetched from the hub "
                               f"({type(e).__name__}); {download_hint(name, root)}") from e
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    for split, spec in src.splits.items():
        rows = _rows(ds, spec, src)
        path = root / REGISTRY[name].files[split]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            f.write("text\tlabel\n")
            for text, label in rows:
                f.write(f"{text}\t{label}\n")
        os.replace(tmp, path)
    return root
