"""The features stage: the frozen encoders run once over the corpus, as lazy array streams."""
