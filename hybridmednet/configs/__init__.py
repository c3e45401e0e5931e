"""HybridMedNet settings (``Config``)."""
