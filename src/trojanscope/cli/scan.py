"""``trojanscope scan``: flags become a :class:`~trojanscope.tasks.ScanTaskSpec`."""

from __future__ import annotations

import argparse
from typing import Any

from trojanscope.cli.common import add_common as _add_common
from trojanscope.cli.common import run_task
from trojanscope.specs import positive_int


HELP = {  # each command's one line in `trojanscope --help` (read without building the parser)
    "scan": ("find an unknown trigger and judge whether a model is backdoored (a verdict, ranked candidate "
              "triggers, hijacked heads)"),
}


def add_parsers(sub: Any) -> None:
    from trojanscope.analysis.scan import ScanConfig
    from trojanscope.models.forward import PRECISION_CHOICES

    SC = ScanConfig()
    sc = sub.add_parser("scan", help=HELP["scan"])
    sc.add_argument("--model", required=True, help="the suspect classifier")
    sc.add_argument("--data", default="sst2", help="clean sentences of the model's task")
    sc.add_argument("--split", default="test")
    sc.add_argument("--budget", type=int, default=SC.budget, help="candidate words the vocabulary search tries")
    sc.add_argument("--n-search", type=positive_int, default=SC.n_search, help="clean sentences per class to search")
    sc.add_argument("--n-verify", type=positive_int, default=SC.n_verify,
                    help="held-out clean sentences per class for the reported flip rates")
    sc.add_argument("--max-words", type=positive_int, default=SC.max_words,
                    help="longest clean sentence used, in words (raise it for long texts, e.g. 24 for AG News)")
    sc.add_argument("--gradient-words", type=int, default=SC.gradient_words,
                    help="whole words per target class that one gradient ranks first, added to the screening (0, "
                         "the default without --reference: none; puts a rare real word planted whole among the "
                         "candidates, and sentiment words a lexicon lacks too; with --reference, 20 at least, ranked "
                         "by how much more they pull the suspect than the reference, docs/benchmarks.md)")
    sc.add_argument("--reference", default=None,
                    help="a clean classifier of the same task (e.g. the demo's clean model, or one you fine-tuned "
                         "yourself); the candidates are tried on it too and count only for what the suspect does "
                         "beyond it, so a clean model's universal adversarial words are not taken for a trigger")
    sc.add_argument("--reference-search", action=argparse.BooleanOptionalAction, default=SC.reference_search,
                    help="with --reference, search for what the suspect does beyond it too (on by default): the "
                         "screening also runs on the reference, and the words that push or move the suspect most "
                         "beyond it are shortlisted, ranked by gradient and combined (finds LWP's combinations)")
    sc.add_argument("--reference-inversion", action=argparse.BooleanOptionalAction, default=SC.reference_inversion,
                    help="with --reference, the inversions also penalise flipping it (off by default: it found planted "
                         "words the inversion missed, and made one clean model's false alarm, docs/benchmarks.md)")
    sc.add_argument("--rejudge", default=None, metavar="SCAN_JSON",
                    help="give a saved scan's verdict again (its scan.json, or its --json output in a file), with "
                         "--reference usually: its verified candidates are re-measured, re-ranked and judged without "
                         "a new search (seconds, not minutes); the sentence settings must be the saved scan's")
    sc.add_argument("--top-k", type=positive_int, default=SC.top_k, help="candidates reported")
    sc.add_argument("--inversion", action=argparse.BooleanOptionalAction, default=SC.inversion,
                    help="also invert triggers by gradient (finds triggers outside the word list)")
    sc.add_argument("--always-invert", action="store_true",
                    help="invert even when a word of the search already surely flips everything (by default the "
                         "costliest phase is skipped then)")
    sc.add_argument("--inversion-tokens", type=positive_int, default=SC.inversion_tokens)
    sc.add_argument("--inversion-steps", type=positive_int, default=SC.inversion_steps)
    sc.add_argument("--word-inversion", action=argparse.BooleanOptionalAction, default=SC.word_inversion,
                    help="also invert whole words (a word-start piece then ## pieces, PICCOLO-style) when nothing "
                         "found so far surely flips: finds a made-up trigger word of several pieces")
    sc.add_argument("--word-pieces", type=positive_int, default=SC.word_pieces,
                    help="pieces of the word the word-level inversion looks for")
    sc.add_argument("--combine-top", type=int, default=SC.combine_top,
                    help="width of the combination search over the words that push the logit or move inner states "
                         "most (0: off, the default without --reference; by the suspect alone it missed LWP's cf mn "
                         "bb; with --reference it runs at width 16 at least, ranked beyond the reference, and finds "
                         "it: docs/benchmarks.md)")
    sc.add_argument("--precision", default=SC.precision, choices=PRECISION_CHOICES,
                    help="for the search (auto: bf16 where the device has it natively); flip rates are fp32")
    sc.add_argument("--seed", type=int, default=SC.seed)
    sc.add_argument("--out", default=None, help="a new directory for scan.json (the full result and its config)")
    sc.add_argument("--overwrite", action="store_true", help="replace --out if it is an empty directory")
    _add_common(sc)


def scan_config_of_args(args: argparse.Namespace):
    """The validated :class:`ScanConfig` a ``trojanscope scan`` command line describes."""
    from trojanscope.analysis.scan import ScanConfig

    return ScanConfig(budget=args.budget, n_search=args.n_search, n_verify=args.n_verify, top_k=args.top_k,
                      max_words=args.max_words, combine_top=args.combine_top, gradient_words=args.gradient_words,
                      inversion=args.inversion, always_invert=args.always_invert,
                      inversion_tokens=args.inversion_tokens,
                      inversion_steps=args.inversion_steps, word_inversion=args.word_inversion,
                      word_pieces=args.word_pieces, reference_search=args.reference_search,
                      reference_inversion=args.reference_inversion,
                      precision=args.precision, seed=args.seed).validate()


def scan_task_of_args(args: argparse.Namespace):
    """The :class:`~trojanscope.tasks.ScanTaskSpec` a ``trojanscope scan`` command line describes."""
    from trojanscope.tasks import ScanTaskSpec

    return ScanTaskSpec(model=args.model, data=args.data, split=args.split, config=scan_config_of_args(args),
                        reference=args.reference, rejudge=args.rejudge,
                        device=args.device, allow_pickle=args.allow_pickle, out=args.out, overwrite=args.overwrite)


def cmd_scan(args: argparse.Namespace) -> dict[str, Any]:
    """``trojanscope scan``: the verdict, the candidates (best first, flip rates on held-out sentences), the
    drifting heads ``[layer (1-based), head]`` and the time taken; ``--out`` keeps the full result."""
    return run_task(scan_task_of_args(args), args)


SPECS = {"scan": scan_task_of_args}
COMMANDS = {"scan": cmd_scan}
