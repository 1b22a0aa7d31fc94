"""The pipeline's stages, each a small class over Arrow batches, plus the function that runs it."""
