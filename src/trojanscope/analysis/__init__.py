"""Analyses built on the one attention path: the probe (more to come: anatomy, E/S, swap, scan)."""

from trojanscope.analysis.probe import ProbeInput, ProbeResult, ProbeSide, find_trigger_spans, prepare_probe, probe

__all__ = ["ProbeInput", "ProbeResult", "ProbeSide", "find_trigger_spans", "prepare_probe", "probe"]
