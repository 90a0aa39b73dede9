"""The speech adapter stage: its distillation data (the model is models/adapter.py)."""
