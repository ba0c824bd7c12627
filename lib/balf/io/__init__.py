"""Files: saving and reloading compressed models (:mod:`.serialization`), export
(:mod:`.export`), the content-keyed caches (:mod:`.cache`, keyed by :mod:`.fingerprints` and
:mod:`.hashing`) and atomic writes (:mod:`.atomic`)."""
