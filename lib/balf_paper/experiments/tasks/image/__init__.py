"""Image classification: datasets and trained models by name (:mod:`.data`), top-1 accuracy and
cross-entropy (:mod:`.evaluation`)."""
