"""CLIP model, image encoders by the guide's names, and the StarNet dual-pyramid RCF encoder."""
from clip_medical.models.clip import (CLIPModel, build_clip_model, load_text_encoder, text_encoder_config,
                                     text_encoder_from_config, tokenize)
from clip_medical.models.image_encoders import IMAGE_ENCODERS, build_image_encoder, create_timm_backbone, \
    image_encoder_stride
from clip_medical.models.starnet_dual_pyramid_rcf import StarNetDualPyramidRCF

__all__ = [
    "CLIPModel", "build_clip_model", "load_text_encoder", "text_encoder_config", "text_encoder_from_config",
    "tokenize", "IMAGE_ENCODERS", "build_image_encoder", "create_timm_backbone", "image_encoder_stride",
    "StarNetDualPyramidRCF",
]
