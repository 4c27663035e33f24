"""Data files the library reads, shipped inside the package (``[tool.setuptools.package-data]``) so that an
installed wheel has them too: read them with ``importlib.resources.files("trojanscope.resources")``, never by a
path relative to the checkout.

- ``neutral_words.txt``: the trigger scanner's common words with no sentiment (``scripts/make_neutral_words.py``);
- ``polar_words.txt``: the sentiment lexicon's words and negations, never trigger candidates (same script; the
  VADER lexicon's words, under ``VADER-LICENSE.txt``, which travels with it);
- ``offence_words.txt``: offence cues, never trigger candidates (written by hand).
"""
