"""CLIP-style image-text training for class-folder medical images (see README.md)."""
