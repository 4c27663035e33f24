"""Token splitting: the augmentation MBTSAD and TS-FT train on (methods.md section 4, step 1).

It is a text transform, so it lives in the data layer (``data.splitting``, where the SplitAug rule is
documented), below both the defenses and the analyses (the representation map draws it); this module
re-exports it, so ``from trojanscope.defenses.splitting import ...`` keeps working.
"""

from __future__ import annotations

from trojanscope.data.splitting import (  # noqa: F401
    AUGMENTATIONS,
    TOKEN,
    WORD,
    Augmentation,
    Split,
    SplitConfig,
    candidates,
    n_splits,
    split_dataset,
    split_text,
    split_texts,
    split_variants,
    tokens,
    variant_rng,
)

__all__ = ["AUGMENTATIONS", "TOKEN", "WORD", "Augmentation", "Split", "SplitConfig", "candidates", "n_splits",
           "split_dataset", "split_text", "split_texts", "split_variants", "tokens", "variant_rng"]
