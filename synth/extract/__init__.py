"""Stage 1: monolingual fragments from raw corpora (readers, fragmenting, LID, quality, dedup, sampling)."""
