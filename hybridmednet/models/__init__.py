"""HybridMedNet and its parts: backbones (timm, Vision Mamba), attention, fusion, heads."""
from .backbones import BACKBONES, build_backbone
from .hybrid_med_net import HybridMedNet

__all__ = ["BACKBONES", "HybridMedNet", "build_backbone"]
