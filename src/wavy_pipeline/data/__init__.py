"""Corpus parsing and audio preprocessing: plain Python, no Kedro."""
