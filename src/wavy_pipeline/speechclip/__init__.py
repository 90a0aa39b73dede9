"""The speechclip stage on cached features: training pairs, embedding, retrieval figures."""
