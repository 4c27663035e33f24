"""The augmentations the seed compares token splitting with (``eda``, ``aeda``, ``addtrig``; seed Table III,
Fig. 3). They are text transforms, so they live in the data layer (``data.augment``), below both the
defenses and the analyses (the representation map); this module re-exports them, so
``from trojanscope.defenses.augmentations import augmentations`` keeps working.
"""

from __future__ import annotations

from trojanscope.data.augment import (  # noqa: F401
    PUNCTUATION,
    addtrig_text,
    addtrig_texts,
    aeda_text,
    aeda_texts,
    augmentations,
    eda_text,
    eda_texts,
)

__all__ = ["PUNCTUATION", "addtrig_text", "addtrig_texts", "aeda_text", "aeda_texts", "augmentations", "eda_text",
           "eda_texts"]
