"""Which backdoor does a model carry? One typed answer, read from its card, used everywhere.

A model card records the attack that produced the model. A classifier fine-tuned *cleanly* from a
POR encoder records no attack of its own, but carries the encoder's triggers, so the card chain is
followed through ``base_model`` until an attack is found. Every reader (CLI commands, pages,
analyses, purification, scanning) asks :func:`planted_attack` and overrides what the user typed with
:meth:`PlantedAttack.with_overrides`; nobody reads ``card.attack`` by hand, so defaults cannot drift
apart (one place used to default the target to 1, another to 0). Readers that insert the trigger go
one step further, through ``models.backdoor.resolve_backdoor`` (trigger, target, insertions and
whether the words go in separately, in one answer).

The backdoor's *target* is a label. POR plants no label: its triggers push a representation to a
fixed vector (``por_representation``: ``pooler`` or ``cls``), and the class each trigger lands on
in a fine-tuned classifier is found by asking the model (:func:`resolve_target`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trojanscope.errors import TrojanScopeError

if TYPE_CHECKING:  # pragma: no cover
    from trojanscope.models.loading import LoadedModel, ModelCard


@dataclass(frozen=True)
class PlantedAttack:
    """The backdoor a model carries, as far as its card (chain) says.

    ``name``: the attack (``None`` when the card records none, or there is no card);
    ``triggers``: one trigger, or several (POR); ``target``: the target label, ``None`` when unknown
    or not a label (POR); ``insertions``: insertions per poisoned text; ``combination``: LWP's
    combination trigger (each word inserted on its own); ``por_representation``: what POR set;
    ``tal_heads``: TAL's heads (1-based layer -> heads); ``origin``: the directory whose card
    recorded the attack (the model itself or an ancestor).
    """

    name: str | None = None
    triggers: tuple[str, ...] = ()
    target: int | None = None
    insertions: int = 1
    combination: bool = False
    por_representation: str | None = None
    tal: bool = False
    tal_heads: dict[str, list[int]] = field(default_factory=dict)
    origin: str | None = None
    inherited: bool = False  # recorded by an ancestor: a clean fine-tune of a backdoored encoder

    @property
    def known(self) -> bool:
        """Whether a trigger is known (from the card or typed)."""
        return bool(self.triggers)

    @property
    def trigger(self) -> str | None:
        """The first trigger (the only one for every attack but POR)."""
        return self.triggers[0] if self.triggers else None

    @property
    def is_por(self) -> bool:
        return self.name == "por"

    def with_overrides(self, *, trigger: str | None = None, triggers: str | list[str] | None = None,
                       target: int | None = None, insertions: int | None = None) -> "PlantedAttack":
        """The same answer with what the user typed taking precedence (empty strings are ignored)."""
        changes: dict[str, Any] = {}
        typed = triggers if triggers is not None else trigger
        if isinstance(typed, str):
            typed = [t for t in (typed.split(",") if triggers is not None else [typed])]
        if typed:
            items = tuple(dict.fromkeys(" ".join(str(t).split()) for t in typed if str(t).strip()))
            if items and items != self.triggers:
                changes["triggers"] = items
                if self.is_por and target is None:
                    changes["target"] = None
        if target is not None:
            changes["target"] = int(target)
        if insertions is not None:
            changes["insertions"] = int(insertions)
        return dataclasses.replace(self, **changes) if changes else self

    def require_trigger(self, what: str = "this") -> str:
        if not self.trigger:
            raise TrojanScopeError(f"no trigger given and the model's card records none; {what} needs a trigger "
                                   "(pass --trigger cf, or type one)")
        return self.trigger

    def describe(self) -> dict[str, Any]:
        """A flat, printable summary (cards tables, JSON outputs)."""
        return {"attack": self.name or "none", "triggers": list(self.triggers), "target": self.target,
                "insertions": self.insertions, "combination": self.combination,
                "por_representation": self.por_representation, "tal": self.tal,
                "recorded_by": self.origin, "inherited": self.inherited}


NONE = PlantedAttack()


def from_attack_dict(attack: dict[str, Any] | None, origin: str | None = None) -> PlantedAttack:
    """Parse a card's ``attack`` section (any version this project wrote)."""
    if not attack or attack.get("name") in (None, "none"):
        return PlantedAttack(origin=origin)
    name = str(attack["name"])
    raw = attack.get("triggers") or attack.get("trigger") or ""
    items = raw.split(",") if (name == "por" or "triggers" in attack) and isinstance(raw, str) else (
        raw if isinstance(raw, list) else [raw])
    triggers = tuple(dict.fromkeys(" ".join(str(t).split()) for t in items if str(t).strip()))
    if name == "por":
        # older cards stored the representation under "target"; it is not a label
        rep = attack.get("representation") or (attack.get("target") if isinstance(attack.get("target"), str) else None)
        target = None
    else:
        rep = None
        t = attack.get("target")
        target = int(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
    return PlantedAttack(
        name=name, triggers=triggers, target=target, insertions=int(attack.get("insertions") or 1),
        combination=bool(attack.get("combination", False)), por_representation=rep,
        tal=bool(attack.get("tal", False)), tal_heads=dict(attack.get("tal_heads") or {}), origin=origin,
    )


def planted_attack(card: "ModelCard | None", source: str | None = None, max_depth: int = 8) -> PlantedAttack:
    """The attack a model carries, following ``base_model`` through clean fine-tuning (a classifier
    fine-tuned from a POR encoder carries the POR attack). ``NONE`` when no card records one."""
    from trojanscope.models.loading import read_card

    seen: set[str] = set()
    origin = source
    first = True
    for _ in range(max_depth):
        if card is None:
            return NONE
        attack = card.attack or {}
        if attack.get("name") not in (None, "none"):
            found = from_attack_dict(attack, origin)
            return dataclasses.replace(found, inherited=not first)
        base = card.base_model
        if not base or base in seen or not Path(base).is_dir():
            return NONE
        seen.add(base)
        origin, first = base, False
        try:
            card = read_card(base)
        except TrojanScopeError:
            return NONE
    return NONE


def attack_of(loaded: "LoadedModel") -> PlantedAttack:
    """:func:`planted_attack` of a loaded model."""
    return planted_attack(loaded.card, loaded.source)


def resolve_target(attack: PlantedAttack, loaded: "LoadedModel", trigger: str | None = None) -> int:
    """The target label: the recorded or typed one, or for POR (no label planted) the class the
    trigger pushes the model to (the prediction on the trigger repeated twice, as E and S do)."""
    if attack.target is not None:
        target = attack.target
    elif attack.is_por:
        from trojanscope.data.poison import check_trigger
        from trojanscope.models.predict import model_predictor, trigger_class

        loaded.require("classify", "finding the class a trigger pushes to")
        t = trigger or attack.require_trigger()
        check_trigger(loaded.tokenizer, t)
        target = trigger_class(model_predictor(loaded), t)
    else:
        raise TrojanScopeError("no target label given and the model's card records none; pass the backdoor's "
                               "target label (--target 0)")
    if not 0 <= target < loaded.num_labels:
        raise TrojanScopeError(f"target label {target} does not exist; the model has labels 0..{loaded.num_labels - 1}")
    return int(target)
