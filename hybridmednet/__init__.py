"""HybridMedNet: multi-scale hybrid network for multi-label chest X-ray classification (see README.md)."""
