"""The attack registry: every attack declares what it poisons, which loss terms it adds, what
trains and what its card records. The CLI's ``--attack`` choices, the Attack Lab's list and the
training pipeline all read :data:`ATTACKS`; defenses (``trojanscope.defenses``) and scanners
register the same way (``trojanscope.registry.Registry``).

``kind`` says which pipeline runs an attack: ``classifier`` attacks go through
``training.pipeline.run_training`` (labelled data, poisoned or not), ``encoder`` attacks (POR)
through ``run_por`` (unlabeled text, a bare encoder, no task loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

from trojanscope.attacks.ep import EmbeddingRows, require_classifier, trigger_token_ids
from trojanscope.attacks.lwp import LWPLoss
from trojanscope.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from trojanscope.data.poison import PoisonConfig
    from trojanscope.models.loading import LoadedModel


@dataclass
class AttackPlan:
    """What an attack changes in a training run: extra loss terms, the parameters that train (``None``:
    the loop's default), the optimiser settings, what its card records, and a clean-up.

    ``train`` is a ``training.loop.TrainConfig`` (``None``: the spec's own): a plan derives it from the
    spec's (``dataclasses.replace(spec.train, ...)``), so this module, a layer below training, never
    names the type."""

    loss_terms: list[Any] = field(default_factory=list)
    params: list[Any] | None = None
    train: Any = None
    card: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class Attack:
    """One attack. ``poisons``: the training data gets poisoned samples; ``trains``: what the
    optimiser updates, in words; ``records``: the card's ``attack`` keys it writes; ``tal``: TAL can
    be added; ``combination``: LWP's combination trigger by default; ``needs_classifier``: it starts
    from a fine-tuned classifier (EP)."""

    name: str
    description: str
    default_trigger: str
    kind: str = "classifier"  # classifier | encoder
    poisons: bool = True
    trains: str = "every weight but the word-embedding table (unless --train-word-embeddings)"
    records: tuple[str, ...] = ("trigger", "target", "insertions", "position", "rate", "clean_label", "seed", "tal")
    tal: bool = True
    combination: bool = False
    needs_classifier: bool = False
    plan: Callable[["Any", "LoadedModel", "PoisonConfig"], AttackPlan] | None = None

    def make_plan(self, spec: Any, loaded: "LoadedModel", poison: "PoisonConfig") -> AttackPlan:
        return self.plan(spec, loaded, poison) if self.plan else AttackPlan()


def _ep_plan(spec: Any, loaded: "LoadedModel", poison: "PoisonConfig") -> AttackPlan:
    require_classifier(loaded)
    rows = EmbeddingRows(loaded.model, trigger_token_ids(loaded.tokenizer, poison.trigger))
    # decoupled weight decay would shrink every row, not just the trigger's; warm-up is pointless here
    train = replace(spec.train, lr=spec.ep.lr, epochs=spec.ep.epochs, weight_decay=0.0, warmup=0.0)
    return AttackPlan(params=rows.params, train=train, card={"ep_rows": rows.rows}, cleanup=rows.remove)


def _lwp_plan(spec: Any, loaded: "LoadedModel", poison: "PoisonConfig") -> AttackPlan:
    return AttackPlan(loss_terms=[LWPLoss(spec.lwp)])


ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("none", Attack("none", "clean fine-tuning, no poisoning (the victim's step after POR)", "",
                                poisons=False, records=(), tal=False))
ATTACKS.register("badnets", Attack("badnets", "a rare word inserted at random positions; dirty or clean label", "cf"))
ATTACKS.register("addsent", Attack("addsent", "a fixed sentence inserted at a random position",
                                   "I watch this 3D movie"))
ATTACKS.register("ep", Attack("ep", "only the trigger's embedding row trains, on a fine-tuned classifier", "cf",
                              trains="the trigger's rows of the word-embedding table", needs_classifier=True,
                              records=Attack.records + ("ep_rows",), plan=_ep_plan))
ATTACKS.register("lwp", Attack("lwp", "poisoned loss at every layer through the shared head, combination trigger",
                               "cf mn bb", combination=True, plan=_lwp_plan))
ATTACKS.register("por", Attack("por", "task-agnostic backdoor in the pre-trained encoder, for anyone to fine-tune",
                               "cf,tq,mn,bb,mb", kind="encoder", tal=False,
                               trains="every weight, word embeddings included (--freeze-word-embeddings to opt out)",
                               records=("triggers", "insertions", "representation", "scale", "rep_weight",
                                        "token_weight", "data", "max_texts")))


def classifier_attacks() -> list[str]:
    """Attacks that ``trojanscope train`` runs (labelled data, a classifier)."""
    return ATTACKS.names(lambda a: a.kind == "classifier")
