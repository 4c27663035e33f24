"""Attacks: BadNets, AddSent, clean-label (poisoners in ``data.poison``), EP, LWP, POR, and TAL as an
add-on to the classifier attacks. Each has a config dataclass with the defaults of methods.md and
an entry in the one registry (``attacks.registry.ATTACKS``)."""

from trojanscope.attacks.ep import EPConfig
from trojanscope.attacks.lwp import LWPConfig, LWPLoss
from trojanscope.attacks.registry import ATTACKS, Attack, AttackPlan, classifier_attacks
from trojanscope.attacks.tal import TALConfig, TALLoss, choose_heads, tal_scores

__all__ = ["ATTACKS", "Attack", "AttackPlan", "EPConfig", "LWPConfig", "LWPLoss", "TALConfig", "TALLoss",
           "choose_heads", "classifier_attacks", "tal_scores"]
