"""What an experiment compresses and how it is scored: image classification
(:mod:`.image`), language modelling and sentence similarity (:mod:`.language`)."""
