"""Model identities for cache keys: the one identity of models and files, ``synth.identity``."""

from synth.identity import identity as model_identity  # noqa: F401
