"""Small real data shipped with elbokit, for the tour, examples and tests.

``kjv_gospels()``: the 3,779 verses of the four gospels of the King James
Bible (public domain), one document per verse, taken from Debian's
``bible-kjv-text``.
"""

from __future__ import annotations

import gzip
from importlib import resources

# Early-modern English function words that dominate a KJV vocabulary without
# carrying topics; added to scikit-learn's English stop words by the tour.
ARCHAIC_STOP_WORDS = [
    "thee", "thou", "thy", "thine", "ye", "hath", "unto", "shall", "shalt", "hast", "doth",
    "dost", "art", "saith", "said", "wilt", "upon", "also", "even", "therefore", "things",
    "thing", "come", "came", "went", "let", "say", "verily", "did", "hath", "wherefore",
]


def kjv_gospels() -> list[str]:
    """The verses of Matthew, Mark, Luke and John (KJV), a list of 3,779 strings."""
    with resources.files(__package__).joinpath("kjv_gospels.txt.gz").open("rb") as raw:
        with gzip.open(raw, "rt", encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
