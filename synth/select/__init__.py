"""Stage 4, the selection half: sentence embeddings and a cheap, re-runnable quality + diversity selection.

``synth.select.embed`` adds an ``embedding`` column (an ordinary stage); ``synth.select.select`` marks every row
``selected`` or not, with a reason, from the judge's ``quality`` and the embeddings. FAISS and
sentence-transformers are imported only when used.
"""

from synth.select.embed import Embed, default_embedding_model
from synth.select.select import Mark, Selection, decide, select
from synth.select.settings import REASONS, SelectError, SelectSettings

__all__ = ["Embed", "Mark", "REASONS", "SelectError", "SelectSettings", "Selection", "decide",
           "default_embedding_model", "select"]
