"""Fine-tuning: a tiny run lowers the loss, saves, resumes, exports and loads into an index; the guard
refuses a worse model; too little data gets a clear error. Tiny sizes keep it to seconds on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brandguard.errors import DataError, IndexCompatibilityError

TINY = {"data.canonical_size": 128, "data.crop": 64, "data.global_size": 64, "data.batch_pairs": 3,
        "optim.steps_per_epoch": 2, "optim.epochs": 1, "optim.warmup_steps": 1, "runtime.device": "cpu"}


@pytest.fixture(scope="module")
def val_labels(small_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brandguard.synth import make_validation_set

    return make_validation_set(tmp_path_factory.mktemp("val") / "val", seed=0, size="small", authentic=12, per_edit=2)


@pytest.fixture(scope="module")
def tiny_run(small_dataset, tmp_path_factory: pytest.TempPathFactory):
    from brandguard.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    lines: list[str] = []
    result = train(small_dataset.refs_dir, run, overrides=TINY, progress=False, echo=lines.append)
    return run, result, lines


def test_training_steps_lower_the_loss(small_dataset) -> None:
    from brandguard.backbones import LocalHead, load_backbone
    from brandguard.config import Config
    from brandguard.index import ReferenceIndex
    from brandguard.training.config import TrainConfig
    from brandguard.training.data import AlignedReferences
    from brandguard.training.trainer import _freeze, _step

    torch.manual_seed(0)
    cfg = TrainConfig().with_overrides({**TINY, "optim.lr": 3e-3})
    index = ReferenceIndex.build(small_dataset.refs_dir, Config().with_overrides({"localization.canonical_size": 128}))
    refs = AlignedReferences.from_index(index)
    batch = refs.batch(np.random.default_rng(0), 4, 64, 64, edit_probability=1.0, occluder_probability=0.5)
    bb = load_backbone("efficientnet_lite0")
    net = bb.net
    net.local_head = LocalHead(net.local_channels(), 16, 32)
    net.train()
    _freeze(net, 2, True)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    mean = torch.tensor(bb.spec.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(bb.spec.std).view(1, 3, 1, 1) * 255
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    losses = [_step(net, batch, cfg, mean, std, torch.device("cpu"), torch.autocast("cpu", enabled=False), opt, scaler)[0]
              for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_tiny_run_saves_exports_and_logs(tiny_run) -> None:
    run, result, lines = tiny_run
    assert result.best == run / "best" and result.accepted
    meta = json.loads((run / "best" / "config.json").read_text())
    for key in ("backbone", "preprocessing", "dimensions", "training_config_digest", "data_digest", "weights_digest"):
        assert meta[key], key
    assert meta["dimensions"]["local"] == 32 and meta["weights_digest"].startswith("sha256:")
    from brandguard.backbones import file_digest

    assert meta["weights_digest"] == file_digest(run / "best" / "model.safetensors")
    assert (run / "config.yaml").is_file() and (run / "epoch_001" / "model.safetensors").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("time,epoch,step,split,loss") and len(rows) >= 2
    assert any("exported" in ln for ln in lines)
    assert result.images_per_second > 0


def test_resume_continues_from_the_last_epoch(tiny_run, small_dataset, tmp_path: Path) -> None:
    import shutil

    from brandguard.training import train

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    lines: list[str] = []
    result = train(small_dataset.refs_dir, run, resume=True, overrides={"optim.epochs": 2}, progress=False,
                   echo=lines.append)
    assert any("resumed from" in ln and "after epoch 1" in ln for ln in lines)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert (run / "epoch_002" / "model.safetensors").is_file()
    assert "epochs: 2" in (run / "config.yaml").read_text()


def test_resume_without_a_checkpoint_and_reuse_of_a_run_dir_are_refused(tiny_run, small_dataset, tmp_path) -> None:
    from brandguard.training import train

    with pytest.raises(DataError, match="no checkpoint to resume"):
        train(small_dataset.refs_dir, tmp_path / "empty", resume=True, overrides=TINY, progress=False)
    with pytest.raises(DataError, match="already holds a run"):
        train(small_dataset.refs_dir, tiny_run[0], overrides=TINY, progress=False)


def test_exported_model_builds_an_index_that_refuses_other_weights(tiny_run, small_dataset, labels) -> None:
    from brandguard.detector import Detector, build_index

    run = tiny_run[0]
    index = build_index(small_dataset.refs_dir, checkpoint=str(run / "best"))
    meta = json.loads((run / "best" / "config.json").read_text())
    assert index.backbone_info["weights_digest"] == meta["weights_digest"]
    assert index.info()["training"]["training_config_digest"] == meta["training_config_digest"]
    det = Detector(index)
    known = [i for i in labels if i.label == "authentic"][:3]
    preds = det.predict_batch([str(i.path) for i in known])
    from brandguard.mismatch import CHANNELS

    learned = CHANNELS.index("learned")
    assert any(np.isfinite(p.channels[learned]) for p in preds if p.channels), "the learned channel is on"
    from brandguard.embedding import Embedder

    with pytest.raises(IndexCompatibilityError, match="built with"):
        Detector(index, Embedder.from_name("efficientnet_lite0", device="cpu"))  # pretrained weights


def test_guard_refuses_a_worse_model_unless_forced_and_reports_both_pipelines(small_dataset, val_labels, tmp_path,
                                                                              monkeypatch) -> None:
    from brandguard.training import GuardError, PipelineEvaluator, train

    real = PipelineEvaluator.evaluate
    pretrained: dict = {}

    def sabotaged(self, embedder=None):  # the fine-tuned pipeline scores every photo the same: useless
        if not pretrained:  # the same references and photos in both runs: the pretrained figures are measured once
            pretrained.update(real(self, None))
        figs = dict(pretrained)
        if embedder is not None:
            figs = {**figs, "auroc": 0.5, "tpr_at_1pct_fpr": 0.0, "tpr_at_5pct_fpr": 0.0}
        return figs

    monkeypatch.setattr(PipelineEvaluator, "evaluate", sabotaged)
    with pytest.raises(GuardError, match="worse than the pretrained"):
        train(small_dataset.refs_dir, tmp_path / "r1", val=val_labels, overrides=TINY, progress=False, echo=lambda s: None)
    assert not (tmp_path / "r1" / "best").exists() and (tmp_path / "r1" / "epoch_001").is_dir()
    lines: list[str] = []
    res = train(small_dataset.refs_dir, tmp_path / "r2", val=val_labels, overrides=TINY, progress=False, force=True,
                echo=lines.append)
    meta = json.loads((res.best / "config.json").read_text())
    assert meta["guard"]["forced"] is True and res.accepted is False
    # both pipelines' figures on the validation photos, side by side
    for figs in (res.before, res.after):
        assert 0.0 <= figs["auroc"] <= 1.0 and 0.0 <= figs["brand_top1"] <= 1.0
    assert res.before["auroc"] > 0.5 == res.after["auroc"]
    assert any(ln.startswith("validation") and "pretrained" in ln and "fine-tuned" in ln for ln in lines)


def test_a_product_with_one_photo_is_a_clear_error(small_dataset, tmp_path) -> None:
    import shutil

    from brandguard.training import train

    refs = tmp_path / "refs"
    shutil.copytree(small_dataset.refs_dir, refs)
    product = next(p for p in refs.glob("*/*") if p.is_dir())
    for extra in sorted(product.iterdir())[1:]:
        extra.unlink()
    with pytest.raises(DataError, match=rf"at least 2 reference photos per product.*{product.parent.name}/{product.name}"):
        train(refs, tmp_path / "run", overrides=TINY, progress=False)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path) -> None:
    from brandguard.training import TrainConfig

    with pytest.raises(DataError, match="unknown training config key 'optim.epoch'.*optim.epochs"):
        TrainConfig().with_overrides({"optim.epoch": 2})
    with pytest.raises(DataError, match="batch_pairs"):
        TrainConfig().with_overrides({"data.batch_pairs": 1})
    with pytest.raises(DataError, match="data.edit_weights.*'packaging_colour'"):
        TrainConfig().with_overrides({"data.edit_weights": {"packaging_colour": 3}})
    cfg = TrainConfig().with_overrides({"optim.epochs": 3, "seed": 7, "data.edit_weights": {"packaging_color": 3}})
    cfg.save_yaml(tmp_path / "c.yaml")
    again = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert again == cfg and again.digest() == cfg.digest()
    shipped = Path(__file__).resolve().parents[1] / "configs" / "finetune.yaml"
    assert TrainConfig.from_yaml(shipped) == TrainConfig(), "configs/finetune.yaml documents the defaults"


def test_occluders_cover_what_their_mask_says() -> None:
    from brandguard.training.occluders import OCCLUDERS, add_occluder

    img = np.full((128, 128, 3), 180, np.uint8)
    img[40:90, 30:100] = (200, 30, 40)
    valid = np.zeros((128, 128), bool)
    valid[8:120, 8:120] = True
    for kind in OCCLUDERS:
        out, mask = add_occluder(img, valid, np.random.default_rng(1), kind)
        assert mask.any() and not (mask & ~valid).any(), kind
        diff = np.abs(out.astype(int) - img.astype(int)).max(-1)
        assert diff[mask].mean() > 10, kind
    with pytest.raises(ValueError, match="unknown occluder"):
        add_occluder(img, valid, np.random.default_rng(0), "hat")
