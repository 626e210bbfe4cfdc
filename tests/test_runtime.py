"""Image backbone runtimes: OpenVINO reproduces torch's features, exports once and atomically,
and runtime + precision keep their embeddings apart."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from catalog_classifier.config import Config, ImageConfig
from catalog_classifier.features.backbone import (
    backbone_key, build_transform, load_backbone, resolve_precision, resolve_runtime, torch_forward,
)
from catalog_classifier.features.embeddings import ImageEmbedder
from catalog_classifier.features.images import decode_image
from catalog_classifier.features.runtimes import OpenVINORuntime, TorchRuntime, export_path, load_runtime

DEMO_IMAGES = Path(__file__).resolve().parents[1] / "data" / "flipkart1050" / "images"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def demo_files() -> list[Path]:
    files = sorted(DEMO_IMAGES.glob("*.jpg"))
    assert len(files) >= 64, f"demo images missing under {DEMO_IMAGES}"
    return files[::len(files) // 64][:64]  # spread over the catalog, not 64 neighbours


@pytest.fixture(scope="module")
def module():
    return load_backbone(ImageConfig(device="cpu"))


@pytest.fixture(scope="module")
def batch(demo_files) -> torch.Tensor:
    transform = build_transform(224)
    return torch.stack([transform(decode_image(f.read_bytes(), 10**8, draft_size=224)[0]) for f in demo_files])


def test_auto_is_openvino_fp32_on_cpu_and_torch_on_cuda():
    assert (resolve_runtime(ImageConfig(device="cpu")), resolve_precision(ImageConfig(device="cpu"))) == (
        "openvino", "fp32")
    cuda = ImageConfig(device="cuda")
    assert (resolve_runtime(cuda), resolve_precision(cuda)) == ("torch", "bf16")  # the GPU path as before
    with pytest.raises(ValueError, match="image.runtime must be one of"):
        ImageConfig(device="cpu", runtime="tensorrt")  # at config load, before anything runs
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_runtime(ImageConfig(device="cuda", runtime="openvino"))
    with pytest.raises(ValueError, match="image.precision must be one of"):
        Config.from_dict({"image": {"precision": "fp16"}})


def test_cache_key_carries_runtime_and_precision():
    keys = {backbone_key(ImageConfig(device="cpu", runtime=r, precision=p))
            for r in ("torch", "openvino") for p in ("fp32", "bf16")}
    assert len(keys) == 4
    assert backbone_key(ImageConfig(device="cpu")) == backbone_key(
        ImageConfig(device="cpu", runtime="openvino", precision="fp32"))


def test_cache_and_export_keys_carry_the_backbone():
    names = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    cfgs = [ImageConfig(device="cpu", backbone=n) for n in names]
    assert len({backbone_key(c) for c in cfgs}) == 3
    assert len({export_path(c, "fp32") for c in cfgs}) == 3
    # the same weights at another input size are another feature extractor too
    assert backbone_key(ImageConfig(device="cpu", image_size=240)) != backbone_key(cfgs[0])
    with pytest.raises(ValueError, match="image.backbone must be one of"):
        Config.from_dict({"image": {"backbone": "efficientnet_lite9"}})  # at config load
    from catalog_classifier.config import IMAGE_BACKBONES
    from catalog_classifier.features.backbone import BACKBONES

    assert set(BACKBONES) == set(IMAGE_BACKBONES)


def test_openvino_fp32_reproduces_torch_features(module, batch, caplog):
    cfg = ImageConfig(device="cpu")  # the default export folder: exported once, reused by later runs
    ov_rt = load_runtime(cfg, module)
    assert isinstance(ov_rt, OpenVINORuntime)
    assert str(ov_rt.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    assert int(ov_rt.compiled.get_property("INFERENCE_NUM_THREADS")) == min(
        torch.get_num_threads(), int(os.environ["CATALOG_CLASSIFIER_THREADS"]))  # conftest sets it
    ref = torch_forward(module, batch).numpy()
    got = np.concatenate([ov_rt(batch[s:s + 32]).numpy() for s in range(0, len(batch), 32)])
    assert got.shape == ref.shape == (64, 1280) and got.dtype == np.float32
    assert _cosine(ref, got).min() >= 0.99999
    assert np.abs(ref - got).max() < 1e-3

    # bf16 is opt-in and visibly different (cached apart): cosine to fp32 down to ~0.993 on
    # these images, which is why it is not a default
    bf16 = load_runtime(ImageConfig(device="cpu", export_dir=cfg.export_dir, precision="bf16"), module)
    low = bf16(batch[:32]).numpy()
    assert _cosine(ref[:32], low).min() >= 0.99
    import openvino as ov

    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert not np.allclose(low, got[:32], atol=1e-5)  # native bf16: the hint took effect
        assert "no bf16 instructions" not in caplog.text
    else:  # OpenVINO falls back to fp32 on a CPU without bf16, and the product says so
        np.testing.assert_allclose(low, got[:32], atol=1e-5)
        assert "no bf16 instructions" in caplog.text


def test_openvino_runs_any_batch_in_static_slices(module, batch):
    one = load_runtime(ImageConfig(device="cpu"), module)
    four = load_runtime(ImageConfig(device="cpu", openvino_batch=4), module)
    assert (one.batch, four.batch) == (1, 4)  # compiled for a static batch, not a dynamic one
    a, b = one(batch[:10]).numpy(), four(batch[:10]).numpy()  # 10 = two slices of 4 and a padded 2
    assert a.shape == b.shape == (10, 1280)
    assert _cosine(a, b).min() >= 0.99999
    assert _cosine(torch_forward(module, batch[:10]).numpy(), b).min() >= 0.99999
    with pytest.raises(ValueError, match="image.openvino_batch"):
        Config.from_dict({"image": {"openvino_batch": 0}})


def test_a_list_of_images_runs_without_a_batch_copy_and_gives_the_same_features(module, batch):
    """The embedder hands the runtime its decoded images as a list (stacking 32 images cost the
    night ~11 ms a batch on the main thread); every runtime gives exactly the tensor's features."""
    images = list(batch[:10])
    assert all(x.is_contiguous() for x in images)  # the transform's layout: a view feeds OpenVINO
    for rt in (load_runtime(ImageConfig(device="cpu"), module),
               load_runtime(ImageConfig(device="cpu", openvino_batch=4), module),
               load_runtime(ImageConfig(device="cpu", runtime="torch"), module)):
        np.testing.assert_array_equal(rt(images).numpy(), rt(batch[:10]).numpy())


def test_torch_runtime_is_the_old_forward(module, batch):
    rt = load_runtime(ImageConfig(device="cpu", runtime="torch"), module)
    assert isinstance(rt, TorchRuntime) and rt.module is module
    np.testing.assert_array_equal(rt(batch[:8]).numpy(), torch_forward(module, batch[:8]).numpy())


def _export_in_child(export_dir: str, queue) -> None:
    from catalog_classifier.features.runtimes import ensure_openvino_ir

    torch.set_num_threads(1)
    queue.put(ensure_openvino_ir(ImageConfig(device="cpu", export_dir=export_dir), "fp32"))


def test_two_processes_racing_to_export_leave_one_complete_ir(tmp_path, batch, module):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_export_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    paths = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cfg = ImageConfig(device="cpu", export_dir=str(tmp_path))
    final = export_path(cfg, "fp32")
    assert paths == [os.path.join(final, "model.xml")] * 2
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(final)]  # no temp folder left behind
    assert sorted(os.listdir(final)) == ["identity.json", "model.bin", "model.xml"]
    got = load_runtime(cfg)(batch[:4]).numpy()  # the surviving IR is complete and right
    assert _cosine(torch_forward(module, batch[:4]).numpy(), got).min() >= 0.99999


def test_runtimes_do_not_share_cached_embeddings(module, demo_files, tmp_path):
    refs = [str(f) for f in demo_files[:6]]
    ov_cfg = ImageConfig(device="cpu", cache_dir=str(tmp_path / "cache"))
    first = ImageEmbedder(ov_cfg, model=module).embed(refs)
    assert (first.n_computed, first.n_cached) == (6, 0)
    torch_cfg = ImageConfig(device="cpu", cache_dir=str(tmp_path / "cache"), runtime="torch")
    second = ImageEmbedder(torch_cfg, model=module).embed(refs)
    assert (second.n_computed, second.n_cached) == (6, 0)  # never served the other runtime's vectors
    assert _cosine(first.vectors, second.vectors).min() >= 0.99999
    again = ImageEmbedder(ov_cfg).embed(refs)
    assert (again.n_computed, again.n_cached) == (0, 6)


def test_compiled_module_runs_the_char_cnn_as_torch_does():
    """The helper the text models can use: a char-CNN over real demo texts, any batch size."""
    import pandas as pd

    from catalog_classifier.features.openvino_cpu import CompiledModule
    from catalog_classifier.features.text import CharVocab
    from catalog_classifier.models.char_cnn import CharCNN

    csv = DEMO_IMAGES.parent / "flipkart_com-ecommerce_sample_1050.csv"
    texts = [f"{t} {d}" for t, d in pd.read_csv(csv, usecols=["product_name", "description"])
             .fillna("").head(100).itertuples(index=False)]
    vocab = CharVocab.build(texts, 300, 2)
    torch.manual_seed(0)
    net = CharCNN(len(vocab), 7, embed_dim=32, filters=64, kernel_sizes=(3, 5), dropout=0.3).eval()
    ids = torch.from_numpy(vocab.encode(texts, 256))
    compiled = CompiledModule(net, ids[:2])
    with torch.inference_mode():
        want = net(ids)
    for part in (ids, ids[:33]):  # batch sizes other than the example's
        got = compiled(part)
        assert got.shape == (len(part), 7)
        np.testing.assert_allclose(got.numpy(), want[:len(part)].numpy(), atol=1e-4, rtol=1e-4)
