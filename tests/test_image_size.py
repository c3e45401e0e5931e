"""An image size below the network's total stride is refused before training, in one line naming the key, the
minimum (read from the network) and the fix, instead of a convolution failing deep inside the first forward."""
import numpy as np
import pytest
import timm
from PIL import Image

from clip_medical.train_clip import parse_args
from convnext_v2.model import create_model
from convnext_v2.train import main as convnext_main
from hybridmednet.configs.default_config import Config
from shared import ConfigError, total_stride


def test_total_stride_is_read_from_the_network():
    assert total_stride(create_model("convnextv2_atto", num_classes=2)) == 32
    assert total_stride(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)) == 16


def test_convnext_refuses_an_image_size_below_its_stride(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((16, 16, 3), 60 * i, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    argv = ["--data-dir", str(tmp_path), "--model", "convnextv2_atto", "--image-size", "16",
            "--train.output_dir", str(tmp_path / "run"), "--train.epochs", "1", "--train.cpu", "true"]
    with pytest.raises(ConfigError, match=r"^image_size=16 is too small for convnextv2_atto, which downsamples by 32 "
                                          r".*; set image_size to 32 or more") as error:
        convnext_main(argv)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()  # refused before the run began


def test_clip_minimum_image_size_comes_from_the_image_encoder():
    argv = ["--data-dir", "unused", "--output-dir", "unused", "--img-size", "16"]
    with pytest.raises(ConfigError, match=r"^img_size=16 is too small for starnet_dual_pyramid_rcf, which downsamples "
                                          r"by 32 .*; set img_size to 32 or more, best a multiple of 32$"):
        parse_args(argv).validate()
    parse_args(argv + ["--image-encoder", "vit"]).validate()  # a ViT's 16 px patches fit a 16 px image


@pytest.mark.parametrize("backbone", ["convnext_tiny", "vim_tiny"])
def test_hybridmednet_refuses_data_image_size_below_its_pyramid_stride(backbone):
    with pytest.raises(ConfigError, match=rf"^DATA.image_size=24 is too small for HybridMedNet \(MODEL.backbone="
                                          rf"{backbone}\), which downsamples by 32 .*; set DATA.image_size to 32 or more"):
        Config.load(argv=["--DATA.image_size", "24", "--MODEL.backbone", backbone])
    assert Config.load(argv=["--DATA.image_size", "32", "--MODEL.backbone", backbone]).DATA["image_size"] == 32
