"""Datasets: the named benchmarks in a data directory, local CSV/TSV/JSONL files, hub datasets.

The data directory is ``$TROJANSCOPE_DATA_DIR`` if set, else ``./data``, else ``../shared/data``
(relative to the working directory, then, when the package runs from a source checkout, to the checkout; an
installed wheel has no checkout, so there only the working directory counts). Benchmark files are never committed.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trojanscope.dirs import checkout_root
from trojanscope.errors import TrojanScopeError

ENV_VAR = "TROJANSCOPE_DATA_DIR"
SPLITS = ("train", "dev", "test")
CSV_FIELD_LIMIT = 16 * 1024 * 1024  # characters in one CSV/TSV field (Python's default, 128 KiB, is too small)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    label_names: tuple[str, ...]
    files: dict[str, str]

    @property
    def trainable(self) -> bool:
        """Whether it has a train split (what training, purification and the scan's task words need)."""
        return "train" in self.files


REGISTRY: dict[str, DatasetInfo] = {
    "sst2": DatasetInfo("sst2", "SST-2 sentence sentiment", ("negative", "positive"),
                        {"train": "sst2/train.tsv", "dev": "sst2/dev.tsv", "test": "sst2/test.tsv"}),
    "olid": DatasetInfo("olid", "OLID offensive-language detection", ("not offensive", "offensive"),
                        {"train": "olid/train.tsv", "dev": "olid/dev.tsv", "test": "olid/test.tsv"}),
    "agnews": DatasetInfo("agnews", "AG News topics (subset)", ("World", "Sports", "Business", "Sci/Tech"),
                          {"train": "agnews/train.tsv", "dev": "agnews/dev.tsv", "test": "agnews/test.tsv"}),
    "imdb": DatasetInfo("imdb", "IMDb reviews, 2,500-review sample (long texts)", ("negative", "positive"),
                        {"test": "imdb/sample.tsv", "sample": "imdb/sample.tsv"}),
}


def trainable_datasets() -> list[str]:
    """The named benchmarks with a train split (the dashboard's training, purification and scan choices)."""
    return [name for name, info in REGISTRY.items() if info.trainable]


@dataclass
class TextDataset:
    """Texts with integer labels ``0..num_labels-1``."""

    texts: list[str]
    labels: list[int]
    name: str = "custom"
    split: str = "train"
    source: str = ""
    label_names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise TrojanScopeError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return max(len(self.label_names), (max(self.labels) + 1) if self.labels else 0)

    def require_classes(self, min_classes: int = 2, what: str = "the training data") -> "TextDataset":
        """Refuse data with fewer than ``min_classes`` distinct labels (a one-class set "trains" a one-logit
        model to 100% accuracy); returns ``self``."""
        classes = sorted(set(self.labels))
        if len(classes) < min_classes:
            found = ("no examples" if not classes else
                     f"only one class (label {classes[0]})" if len(classes) == 1 else
                     f"only {len(classes)} classes (labels {', '.join(map(str, classes))})")
            raise TrojanScopeError(f"{what} has {found}; a classifier needs at least "
                                   f"{'two' if min_classes == 2 else min_classes}")
        return self

    def subset(self, index: Sequence[int]) -> "TextDataset":
        return TextDataset([self.texts[i] for i in index], [self.labels[i] for i in index],
                           self.name, self.split, self.source, self.label_names)

    def head(self, n: int | None, seed: int = 0) -> "TextDataset":
        """A seeded random subset of ``n`` samples (all when ``n`` is None or large enough)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise TrojanScopeError(f"subset size must be positive, got {n}")
        import random

        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return self.subset(idx)

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "source": self.source, "n": len(self),
                "num_labels": self.num_labels}


def data_dir() -> Path:
    """The directory holding the named benchmarks (see module docstring)."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise TrojanScopeError(f"{ENV_VAR}={env} is not a directory")
        return path
    candidates = [Path("data"), Path("..") / "shared" / "data"]
    # then the same beside the source checkout, wherever the command runs from; found by its layout
    # (checkout_root), not by counting the parents of this file: from an installed wheel those are the
    # site-packages directory's, so there is no checkout and only the working directory counts
    repo = checkout_root()
    if repo is not None:
        candidates += [repo / "data", repo.parent / "shared" / "data"]
    for cand in candidates:
        if cand.is_dir() and any((cand / name).is_dir() for name in REGISTRY):
            return cand.resolve()
    raise TrojanScopeError(
        f"no data directory found: set {ENV_VAR} to a directory holding sst2/, olid/, agnews/, imdb/ "
        "(each with train.tsv/dev.tsv/test.tsv), or create ./data"
    )


def data_identity(name: str) -> list[list]:
    """What makes dataset ``name`` *these* files on disk: for a named benchmark, each split file's resolved path,
    inode, size and mtime in the current data directory (``$TROJANSCOPE_DATA_DIR`` may point elsewhere tomorrow);
    for a local file, the same of that file; ``[]`` where nothing on disk says it (``hf:``, nothing found). A cache
    keyed on it sees another data directory or an edited file."""
    name = str(name).strip()
    if name in REGISTRY:
        try:
            root = data_dir()
        except TrojanScopeError:
            return []
        paths = [root / f for f in REGISTRY[name].files.values()]
    elif name.startswith("hf:"):
        return []
    else:
        paths = [Path(name).expanduser()]
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append([str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns])
    return out


def fetch_missing(name: str, root: Path | None) -> Path:
    """A named benchmark that is not on disk: fetched from the hub into the data directory (``./data`` when there
    is none) unless offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``); else an error saying what to download
    and where to put it (:mod:`trojanscope.data.fetch`)."""
    from trojanscope.data.fetch import download_hint, fetch_benchmark

    target = root if root is not None and os.access(root, os.W_OK) else Path("data")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        where = f"in {root}" if root is not None else "(no data directory found)"
        raise TrojanScopeError(f"dataset {name!r} is not on disk {where} and the hub is off (HF_HUB_OFFLINE): "
                               f"{download_hint(name, target)}")
    return fetch_benchmark(name, target)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    text_column: str | None = None,
    label_column: str | None = None,
) -> TextDataset:
    """Load a named benchmark split, a local ``.csv``/``.tsv``/``.jsonl`` file, or ``hf:NAME``."""
    name = str(name).strip()
    if name in REGISTRY:
        info = REGISTRY[name]
        if split not in info.files:
            raise TrojanScopeError(f"dataset {name!r} has no split {split!r}; available: {', '.join(info.files)}")
        try:
            root: Path | None = data_dir()
        except TrojanScopeError:
            if os.environ.get(ENV_VAR):
                raise  # the user's own setting is wrong: say so rather than download elsewhere
            root = None
        if root is None or not (root / info.files[split]).is_file():
            root = fetch_missing(name, root)
        path = root / info.files[split]
        if not path.is_file():
            raise TrojanScopeError(f"{path} is missing: dataset {name!r} split {split!r} is expected there")
        texts, labels = read_table(path)
        ds = TextDataset(texts, labels, name, split, str(path), info.label_names)
        _check_labels(ds, path, len(info.label_names))
        return ds
    if name.startswith("hf:"):
        return _load_hub(name[3:], split, text_column, label_column)
    path = Path(name).expanduser()
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        if not path.is_file():
            raise TrojanScopeError(f"data file {path} does not exist")
        texts, labels = read_table(path, text_column, label_column)
        return TextDataset(texts, labels, path.stem, split, str(path))
    if path.is_dir():
        fname = {"train": "train", "dev": "dev", "test": "test"}.get(split, split)
        for ext in (".tsv", ".csv", ".jsonl", ".json"):
            if (path / (fname + ext)).is_file():
                texts, labels = read_table(path / (fname + ext), text_column, label_column)
                return TextDataset(texts, labels, path.name, split, str(path / (fname + ext)))
        raise TrojanScopeError(f"{path} has no {fname}.tsv, {fname}.csv or {fname}.jsonl for split {split!r}")
    raise TrojanScopeError(
        f"unknown dataset {name!r}: use one of {', '.join(REGISTRY)}, a .csv/.tsv/.jsonl file with text and "
        "label columns, a directory of such files, or hf:NAME for a Hugging Face dataset"
    )


TEXT_COLUMNS = ("text", "sentence", "content", "review", "tweet")
LABEL_COLUMNS = ("label", "labels", "class", "target")


def _pick(columns: Sequence[str], wanted: str | None, choices: Sequence[str], what: str, path) -> str:
    # the messages name only the allowed columns, never what the file holds (no file contents in errors)
    if wanted:
        if wanted not in columns:
            raise TrojanScopeError(f"{path}: no {what} column {wanted!r}; name a column the file has, or leave it "
                                   f"out to use one of {', '.join(choices)}")
        return wanted
    for c in choices:
        if c in columns:
            return c
    raise TrojanScopeError(f"{path}: no {what} column found; expected one of {', '.join(choices)}")


def read_table(path: str | os.PathLike, text_column: str | None = None,
               label_column: str | None = None) -> tuple[list[str], list[int]]:
    """Read texts and integer labels from a CSV, TSV, JSONL or JSON file, with clear errors.

    A ``.json`` file holds either one JSON array of objects or one object per line (JSON Lines, as
    ``datasets`` writes them); each object is one example with the same column rules as CSV.
    """
    path = Path(path)
    rows: list[dict]
    numbers: list[int] | None = None  # where each row came from (line or item), for error messages
    where = "line"
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            rows, numbers, where = _read_json_rows(path)
            columns = list(rows[0].keys()) if rows else []
        else:
            delim = "\t" if path.suffix.lower() == ".tsv" else ","
            _raise_csv_field_limit()
            with path.open(encoding="utf-8", newline="") as f:
                quoting = csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL
                reader = csv.DictReader(f, delimiter=delim, quoting=quoting)
                try:
                    rows = list(reader)
                except csv.Error as e:
                    raise TrojanScopeError(f"{path}, line {reader.line_num}: not readable as "
                                           f"{'TSV' if delim == chr(9) else 'CSV'} ({e})") from None
                columns = list(reader.fieldnames or [])
    except UnicodeDecodeError as e:
        raise TrojanScopeError(f"{path} is not UTF-8 text") from e
    if not rows:
        raise TrojanScopeError(f"{path} holds no examples")
    tcol = _pick(columns, text_column, TEXT_COLUMNS, "text", path)
    lcol = _pick(columns, label_column, LABEL_COLUMNS, "label", path)
    texts, labels = [], []
    if numbers is None:  # CSV/TSV: the header is line 1 (a quoted field may span lines: approximate then)
        numbers = list(range(2, len(rows) + 2))
    raw_labels = [str(row.get(lcol)).strip() for row in rows]
    if all(lab == "-1" for lab in raw_labels):
        raise TrojanScopeError(f"{path} has no labels (every label is -1, as in an unlabelled test split); "
                               "use a labelled split")
    for n, row, raw in zip(numbers, rows, raw_labels):
        text, label = row.get(tcol), row.get(lcol)
        if text is None or not str(text).strip():
            raise TrojanScopeError(f"{path}, {where} {n}: empty text")
        try:
            lab = int(raw)
        except (TypeError, ValueError):
            raise TrojanScopeError(
                f"{path}, {where} {n}: the label is not an integer; labels must be integers 0..K-1"
            ) from None
        if lab < 0:
            raise TrojanScopeError(f"{path}, {where} {n}: label {lab} is negative (unlabelled?); labels must be "
                                   "integers 0..K-1")
        texts.append(str(text))
        labels.append(lab)
    return texts, labels


def _raise_csv_field_limit() -> None:
    """Let one CSV field hold up to :data:`CSV_FIELD_LIMIT` characters (long documents)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # < 2**31: fits a C long on every platform


def _read_json_rows(path: Path) -> tuple[list[dict], list[int], str]:
    """The objects of a JSON Lines file, or of a ``.json`` file holding one array (or JSON Lines).

    Returns the rows, their line (or array item) numbers, and which of the two the numbers are.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass  # not one JSON value: JSON Lines (checked line by line below)
        else:
            if isinstance(data, list):
                for i, item in enumerate(data, 1):
                    if not isinstance(item, dict):
                        raise TrojanScopeError(f"{path}, item {i} of the array: expected an object with text and "
                                               f"label fields, found {_json_kind(item)}")
                return data, list(range(1, len(data) + 1)), "item"
            if not (isinstance(data, dict) and len([ln for ln in text.splitlines() if ln.strip()]) == 1):
                raise TrojanScopeError(f"{path} holds {_json_kind(data)}; a .json data file holds one array of "
                                       "objects (each with text and label fields), or one object per line")
    rows, numbers = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            hint = ("; a .json data file holds one array of objects, or one object per line"
                    if path.suffix.lower() == ".json" else "")
            raise TrojanScopeError(f"{path}, line {n}: not valid JSON ({e.msg}){hint}") from None
        if not isinstance(row, dict):
            raise TrojanScopeError(f"{path}, line {n}: expected an object with text and label fields, found "
                                   f"{_json_kind(row)}")
        rows.append(row)
        numbers.append(n)
    return rows, numbers, "line"


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "one object"
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _check_labels(ds: TextDataset, path, expected: int) -> None:
    bad = sorted({lab for lab in ds.labels if lab >= expected})
    if bad:
        raise TrojanScopeError(f"{path}: labels {bad} out of range; {ds.name} has labels 0..{expected - 1}")


def _load_hub(name: str, split: str, text_column: str | None, label_column: str | None) -> TextDataset:
    try:
        import datasets as hf_datasets  # optional dependency
    except ImportError as e:
        raise TrojanScopeError("hf: datasets need the 'datasets' package (pip install datasets)") from e
    repo, _, config = name.partition(":")
    hf_split = {"dev": "validation"}.get(split, split)
    try:
        ds = hf_datasets.load_dataset(repo, config or None, split=hf_split)
    except Exception as e:  # noqa: BLE001
        raise TrojanScopeError(f"could not load hub dataset {name!r} split {hf_split!r} (offline?): {e}") from e
    tcol = _pick(ds.column_names, text_column, TEXT_COLUMNS, "text", name)
    lcol = _pick(ds.column_names, label_column, LABEL_COLUMNS, "label", name)
    try:
        labels = [int(x) for x in ds[lcol]]
    except (TypeError, ValueError):
        raise TrojanScopeError(f"hf:{name}: column {lcol!r} does not hold integer labels") from None
    if labels and all(lab < 0 for lab in labels):
        other = "validation" if hf_split != "validation" else "train"
        raise TrojanScopeError(f"split {hf_split} of hf:{name} has no labels (-1); use {other}")
    bad = next((i for i, lab in enumerate(labels) if lab < 0), None)
    if bad is not None:
        raise TrojanScopeError(f"hf:{name} split {hf_split}, row {bad}: label {labels[bad]} is negative "
                               "(unlabelled); labels must be integers 0..K-1")
    return TextDataset([str(t) for t in ds[tcol]], labels, name, split, f"hf:{name}")
