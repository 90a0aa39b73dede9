"""Plain-Python core (no Kedro): atomic writes and the value types the stages pass on.

``datasets/`` wraps these in versioned Kedro datasets; models, data and the stage packages
use them directly.
"""
