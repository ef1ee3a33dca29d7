"""Name normalisation for exact matching (DESIGN.md section 5.1). Pure."""

import unicodedata
from functools import lru_cache

_APOSTROPHES = dict.fromkeys(map(ord, "'`´‘’ʼ′"), None)
_HYPHENS = dict.fromkeys(map(ord, "-‐‑‒–—"), " ")


# Names repeat across a practice list (given names especially), so a run normalises each
# spelling once.
@lru_cache(maxsize=65536)
def normalise_name(name: str | None) -> str:
    """Case, diacritics (NFKD), apostrophe variants and spacing removed; hyphens become spaces.

    "O’Brien" == "obrien", "Zoë" == "zoe", "Smith-Jones" == "smith jones".
    """
    if not name:
        return ""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    text = stripped.translate(_APOSTROPHES).translate(_HYPHENS).casefold()
    return " ".join(text.split())
