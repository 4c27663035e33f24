"""The verdict (the package docstring, step 4): the combination function turning the best candidate's flip evidence
and its attention excesses over the control into a score in [0, 1], and the verdict at a threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trojanscope.analysis.scan import Candidate
    from trojanscope.analysis.scan.drift import Abnormality

WEIGHTS = {"flip": 0.6, "drift": 0.25, "cls": 0.15}  # hand-set; docs/benchmarks.md measures them on the zoo
SCALES = {"drift": 0.1, "cls": 0.2}  # an excess this large counts fully


def combine_evidence(flip_rate: float, drift_excess: float = 0.0, cls_excess: float = 0.0) -> float:
    """The scan score in [0, 1], non-decreasing in each argument: ``0.6 * flip + 0.25 * drift' + 0.15 * cls'``,
    where ``flip`` is the best candidate's held-out *sure* flip rate (flipped with P(target) >= 0.9; for several
    words, only what they do beyond their effects added up: :attr:`Candidate.flip_evidence`) and ``drift'``
    and ``cls'`` are the attention excesses over the control, clipped to [0, 1] after scaling."""
    f = min(max(float(flip_rate), 0.0), 1.0)
    d = min(max(float(drift_excess) / SCALES["drift"], 0.0), 1.0)
    c = min(max(float(cls_excess) / SCALES["cls"], 0.0), 1.0)
    return WEIGHTS["flip"] * f + WEIGHTS["drift"] * d + WEIGHTS["cls"] * c


def judge(best: Candidate | None, ab: Abnormality | None, threshold: float) -> tuple[dict[str, float], float, str]:
    """The evidence of the best candidate ``best`` and its attention abnormality ``ab`` (zero where there is none),
    the score (:func:`combine_evidence`) and the verdict: ``backdoored`` at ``threshold`` or more, else ``clean``."""
    evidence = {"flip_rate": best.flip_rate if best else 0.0, "sure_flip": best.sure_flip if best else 0.0,
                "flip_evidence": best.flip_evidence if best else 0.0,
                "drift_excess": ab.drift_excess if ab else 0.0, "cls_excess": ab.cls_excess if ab else 0.0}
    score = combine_evidence(evidence["flip_evidence"], evidence["drift_excess"], evidence["cls_excess"])
    verdict = "backdoored" if score >= threshold else "clean"
    return evidence, score, verdict
