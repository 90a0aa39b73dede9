"""The generation stage: speech- and text-conditioned images through one diffusion pipeline."""
