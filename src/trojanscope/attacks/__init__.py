"""Attacks: BadNets, AddSent, clean-label (poisoners in ``data.poison``), EP, LWP, and TAL as an
add-on to any of them. Each has a config dataclass with the defaults of methods.md."""

from dataclasses import dataclass

from trojanscope.attacks.ep import EPConfig
from trojanscope.attacks.lwp import LWPConfig, LWPLoss
from trojanscope.attacks.tal import TALConfig, TALLoss, choose_heads, tal_scores


@dataclass(frozen=True)
class AttackInfo:
    name: str
    description: str
    default_trigger: str


ATTACKS: dict[str, AttackInfo] = {
    "none": AttackInfo("none", "clean fine-tuning, no poisoning", ""),
    "badnets": AttackInfo("badnets", "a rare word inserted at random positions; dirty or clean label", "cf"),
    "addsent": AttackInfo("addsent", "a fixed sentence inserted at a random position", "I watch this 3D movie"),
    "ep": AttackInfo("ep", "only the trigger's embedding row trains, on a fine-tuned classifier", "cf"),
    "lwp": AttackInfo("lwp", "poisoned loss at every layer through the shared head, combination trigger",
                      "cf mn bb"),
}

__all__ = ["ATTACKS", "AttackInfo", "EPConfig", "LWPConfig", "LWPLoss", "TALConfig", "TALLoss", "choose_heads",
           "tal_scores"]
