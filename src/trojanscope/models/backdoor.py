"""Which backdoor, and how is it inserted? One answer for every reader that builds poisoned text.

:func:`resolve_backdoor` turns a loaded model (its card chain, ``models.planted``) and what the user
typed into a :class:`Backdoor`: the trigger, the target label, the insertions per text and whether the
trigger's words are inserted separately (LWP's combination trigger). :meth:`Backdoor.poison` builds
the poisoned texts from it, the same way for everyone. Eval, detection, purification's before/after
ASR, the head view, the embedding swap and the representation map all go through the two, so one
model gives one ASR on one set of sentences wherever it is measured.

**The combination rule.** ``combination`` is true only when the card (chain) records LWP's
combination trigger *and* the trigger being inserted is exactly that recorded trigger (compared after
whitespace is normalised, as ``PlantedAttack.with_overrides`` stores it). A typed trigger that differs
(one of its words, another order, another word) is inserted as one phrase: the combination is a
property of the recorded trigger, not of the model. With ``use_card=False`` nothing is recorded, so
the trigger is always a phrase.

**The poisoned set.** Only samples whose label is not the target are poisoned (ASR's definition;
``only_non_target=False`` poisons every text, for the representation map). The trigger is inserted
into *every* eligible text, in data order, by one ``random.Random(seed)``
(``data.poison.poisoned_test_set``: exactly the set ASR is measured on); when ``n`` is smaller than
that set, ``n`` of its texts are then drawn by ``random.Random(seed)`` and kept in data order. So
sample ``i``'s poisoned text is the same whatever ``n`` is, and ``n`` at least the set's size gives
the whole ASR set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trojanscope.data.datasets import TextDataset
from trojanscope.data.poison import PoisonConfig, PoisonedDataset
from trojanscope.errors import TrojanScopeError

if TYPE_CHECKING:  # pragma: no cover
    from trojanscope.models.loading import LoadedModel


@dataclass(frozen=True)
class Backdoor:
    """A resolved backdoor: ``trigger`` (``None``: none known), ``target`` label (``None`` when not
    resolved), ``insertions`` per poisoned text and ``combination`` (each trigger word inserted on its
    own; see the module docstring for when it is true)."""

    trigger: str | None = None
    target: int | None = None
    insertions: int = 1
    combination: bool = False

    @property
    def known(self) -> bool:
        """Whether a trigger is known (recorded in the card chain or typed)."""
        return bool(self.trigger)

    def require(self, what: str = "this") -> str:
        """The trigger; a clear error when there is none."""
        if not self.trigger:
            raise TrojanScopeError(f"no trigger given and the model's card records none; {what} needs a trigger "
                                   "(pass --trigger cf, or type one)")
        return self.trigger

    def parts(self) -> list["Backdoor"]:
        """For a combination trigger of several words, each word alone (inserted the same number of
        times, as a phrase): the inputs that must *not* fire. Empty otherwise."""
        words = (self.trigger or "").split()
        if not self.combination or len(words) < 2:
            return []
        return [Backdoor(w, self.target, self.insertions, False) for w in words]

    def poison(self, data: TextDataset, n: int | None = None, seed: int = 0,
               only_non_target: bool = True) -> PoisonedDataset:
        """The poisoned texts (with their trigger spans, labels and original labels) of ``data``: its
        non-target samples (every sample with ``only_non_target=False``) with the trigger inserted, all of
        them or ``n`` drawn at random, in data order; seeded by ``seed`` (see the module docstring)."""
        from trojanscope.data import poison as P  # looked up at call time (tests wrap poisoned_test_set)

        trigger = self.require("poisoning texts")
        if n is not None and n < 1:
            raise TrojanScopeError(f"n must be at least 1 (poisoned texts), got {n}")
        if only_non_target:
            if self.target is None:
                raise TrojanScopeError("poisoning the non-target samples needs the backdoor's target label")
            full = P.poisoned_test_set(data, trigger, self.target, self.insertions, "random", seed,
                                       self.combination)
            rows_of = [i for i, lab in enumerate(data.labels) if lab != self.target]  # poisoned_test_set's order
        else:
            inserted = P.insert_each(data.texts, trigger, self.insertions, "random", seed, self.combination)
            rows_of = list(range(len(data)))
            full = self._dataset(data, rows_of, [x.text for x in inserted], [x.spans for x in inserted], seed)
        if n is None or n >= len(rows_of):
            return full
        picked = sorted(random.Random(seed).sample(range(len(rows_of)), n))
        return self._dataset(data, [rows_of[r] for r in picked], [full.texts[r] for r in picked],
                             [full.spans[r] for r in picked], seed)

    def _dataset(self, data: TextDataset, rows: list[int], texts: list[str], spans: list[Any],
                 seed: int) -> PoisonedDataset:
        """A poisoned set built from ``data``'s rows and the inserted texts (never from another poisoned
        set's labels)."""
        orig = [data.labels[i] for i in rows]
        labels = [self.target] * len(rows) if self.target is not None else list(orig)
        config = (PoisonConfig(self.trigger or "", self.insertions, "random", self.target, 1.0, False,
                               self.combination, seed) if self.target is not None else None)
        return PoisonedDataset(list(texts), labels, [True] * len(rows), list(spans), orig, config, data.describe())

    def describe(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "target": self.target, "insertions": self.insertions,
                "combination": self.combination}


NO_BACKDOOR = Backdoor()


def resolve_backdoor(loaded: "LoadedModel", *, trigger: str | None = None, target: int | None = None,
                     insertions: int | None = None, use_card: bool = True, purpose: str | None = None,
                     need_target: bool = True) -> Backdoor:
    """The backdoor of ``loaded`` to test: what the user typed (``trigger``, ``target``, ``insertions``;
    ``None`` or empty: not typed) over what its card chain records (``use_card=False``: nothing recorded).

    ``purpose`` (e.g. ``"the head view"``): a trigger is required, and its absence is an error naming
    it; without ``purpose``, no trigger gives a :class:`Backdoor` whose ``known`` is false (CACC only).
    The trigger is checked against the tokenizer ([UNK] is an error). ``need_target``: the target is
    resolved (typed, recorded, or for POR the class the trigger pushes the model to; none is an error);
    with ``need_target=False`` it is the typed or recorded one, or ``None``. ``combination`` follows the
    rule of the module docstring."""
    from trojanscope.data.poison import check_trigger
    from trojanscope.models.planted import NONE, attack_of, resolve_target

    recorded = attack_of(loaded) if use_card else NONE
    attack = recorded.with_overrides(trigger=trigger, target=target, insertions=insertions)
    trig = attack.trigger
    if not trig:
        if purpose is not None:
            attack.require_trigger(purpose)
        return Backdoor(None, None, attack.insertions, False)
    check_trigger(loaded.tokenizer, trig)
    tgt = resolve_target(attack, loaded, trig) if need_target else attack.target
    combination = bool(recorded.combination and trig == recorded.trigger)
    return Backdoor(trig, tgt, attack.insertions, combination)
