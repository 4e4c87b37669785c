"""Shared fixtures: synthetic chest-X-ray-like images and tiny exported ONNX models (no torch).

The tiny models follow the exported-ONNX contract (docs/CONTRACTS.md) and carry a model card:
- segmenter: ``logits = template - k * blur(image - 0.5)``; the template is +3 inside two
  lung-shaped ellipses and -3 outside, so masks are plausible (lung fraction ~0.25) and still
  depend a little on the image. Variants give an empty, a full or a tiny mask.
- classifier: ``Gemm(GlobalAveragePool(Relu(Conv(image * mask))))`` with seeded random weights.
Everything is 64 px so the suite runs in seconds on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from manet_edge.metadata import CARD_KEY, ModelCard

SIZE = 64
OPSET = 17


def lung_template(size: int, variant: str = "lungs") -> np.ndarray:
    """(size, size) float32 logits template: +3 in the lungs, -3 elsewhere."""
    if variant == "empty":
        return np.full((size, size), -10.0, np.float32)
    if variant == "full":
        return np.full((size, size), 10.0, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    scale = 0.25 if variant == "small" else 1.0
    inside = np.zeros((size, size), bool)
    for cx in (0.32, 0.68):
        inside |= ((xx - cx) / (0.14 * scale)) ** 2 + ((yy - 0.5) / (0.30 * scale)) ** 2 <= 1.0
    return np.where(inside, 3.0, -3.0).astype(np.float32)


def _model(nodes, inputs, outputs, inits, card: ModelCard) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="manet-edge-tests")
    model.ir_version = 9
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.checker.check_model(model)
    return model


def seg_weights(size: int = SIZE, variant: str = "lungs", k: float = 2.0) -> dict[str, np.ndarray]:
    """The tiny segmenter's parameters (shared with the torch twin in the parity tests)."""
    return {"w": np.full((1, 1, 3, 3), -k / 9.0, np.float32), "b": np.array([k * 0.5], np.float32),
            "template": lung_template(size, variant)[None, None]}


def cls_weights(channels: int = 1, seed: int = 0, hidden: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"cw": rng.normal(0, 0.6, (hidden, channels, 3, 3)).astype(np.float32),
            "cb": rng.normal(0, 0.1, (hidden,)).astype(np.float32),
            "gw": rng.normal(0, 2.0, (5, hidden)).astype(np.float32),
            "gb": rng.normal(0, 0.2, (5,)).astype(np.float32)}


def make_segmenter(path: Path, *, size: int = SIZE, variant: str = "lungs", card_kind: str = "seg",
                   card_size: int | None = None, postprocess: dict | None = None) -> Path:
    w = seg_weights(size, variant)
    card = ModelCard(kind=card_kind, model_name=f"tiny-seg-{variant}", input_size=card_size or size,
                     postprocess=postprocess or {}, mask_threshold=0.5)
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["blur"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["blur", "template"], ["logits"])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, size, size])]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    onnx.save(_model(nodes, inputs, outputs, inits, card), str(path))
    return Path(path)


def make_classifier(path: Path, *, size: int = SIZE, channels: int = 1, seed: int = 0, card_kind: str = "cls",
                    card_size: int | None = None, classes: tuple[str, ...] | None = None) -> Path:
    w = cls_weights(channels, seed)
    kw = {"classes": classes} if classes else {}
    card = ModelCard(kind=card_kind, model_name="tiny-cls-ma", input_size=card_size or size, in_channels=channels,
                     mask_attention=True, ma_op="inline", **kw)
    nodes = [helper.make_node("Mul", ["image", "mask"], ["masked"]),
             helper.make_node("Conv", ["masked", "cw", "cb"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["act"]),
             helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["feats"], axis=1),
             helper.make_node("Gemm", ["feats", "gw", "gb"], ["logits"], transB=1)]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, size, size])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    onnx.save(_model(nodes, inputs, outputs, inits, card), str(path))
    return Path(path)


def make_models_dir(folder: Path, **seg_kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    make_segmenter(folder / "segmenter.onnx", **seg_kw)
    make_classifier(folder / "classifier.onnx")
    return folder


def xray(size: int | tuple[int, int] = SIZE, seed: int = 0, bits: int = 8) -> np.ndarray:
    """A chest-X-ray-like grey image (uint8 or uint16): bright body, dark lungs, bright spine, noise."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    body = 0.75 - 0.3 * ((xx - 0.5) / 0.5) ** 2
    lungs = np.zeros((h, w), np.float32)
    for cx in (0.32 + rng.uniform(-0.03, 0.03), 0.68 + rng.uniform(-0.03, 0.03)):
        lungs += (((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1.0) * rng.uniform(0.35, 0.5)
    spine = 0.15 * np.exp(-(((xx - 0.5) / 0.04) ** 2))
    img = np.clip(body - lungs + spine + rng.normal(0, 0.03, (h, w)), 0, 1)
    peak = (1 << bits) - 1
    return (img * peak).astype(np.uint16 if bits > 8 else np.uint8)


def save_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """segmenter.onnx + classifier.onnx, tiny, valid."""
    return make_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def seg_model(models_dir) -> Path:
    return models_dir / "segmenter.onnx"


@pytest.fixture(scope="session")
def cls_model(models_dir) -> Path:
    return models_dir / "classifier.onnx"


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Six good synthetic X-rays in two sub-folders and three formats."""
    folder = tmp_path / "xrays"
    for i in range(4):
        save_png(folder / "a" / f"img{i}.png", xray(SIZE, seed=i))
    save_png(folder / "b" / "wide.png", xray((48, 80), seed=7))
    from PIL import Image

    Image.fromarray(xray(96, seed=9)).save(folder / "b" / "photo.jpg", quality=95)
    return folder


def make_dicom(path: Path, array: np.ndarray, *, photometric: str = "MONOCHROME2", window: tuple[float, float] | None = None,
               slope: float | None = None, intercept: float | None = None, compressed: bool = False,
               preamble: bool = True, rows: int | None = None, cols: int | None = None) -> Path:
    """Write a DICOM file with pydicom (uncompressed 16-bit, or a JPEG transfer syntax with junk data)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if compressed else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = "Synthetic^Test"
    ds.Rows, ds.Columns = rows or array.shape[0], cols or array.shape[1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if compressed:
        from pydicom.encaps import encapsulate

        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"])
        ds["PixelData"].is_undefined_length = True
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.ascontiguousarray(array, dtype=np.uint16).tobytes()
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0.0, "US"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A small PNG whose header claims ``width`` x ``height`` (nothing big is ever allocated)."""
    import struct
    import zlib

    save_png(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """One file per bad-input kind; returns relative path -> a phrase its error message must contain."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "tmp_good.png"
    save_png(good, xray(SIZE, seed=3))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (folder / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    buf = folder / "tmp.jpg"
    Image.fromarray(xray(SIZE, seed=4)).save(buf, quality=90)
    (folder / "truncated.jpg").write_bytes(buf.read_bytes()[: len(buf.read_bytes()) // 3])
    huge_png(folder / "huge.png")
    make_dicom(folder / "huge.dcm", np.zeros((4, 4), np.uint16), rows=20000, cols=20000)
    save_png(folder / "tiny.png", np.full((8, 8), 100, np.uint8))
    save_png(folder / "blank.png", np.full((SIZE, SIZE), 128, np.uint8))
    make_dicom(folder / "compressed.dcm", np.zeros((SIZE, SIZE), np.uint16), compressed=True)
    (folder / "truncated.dcm").write_bytes(make_dicom(folder / "tmp.dcm", xray(SIZE, 5, bits=12)).read_bytes()[:300])
    (folder / "broken_link.png").symlink_to(folder / "does-not-exist.png")
    for tmp in ("tmp_good.png", "tmp.jpg", "tmp.dcm"):
        (folder / tmp).unlink()
    return {"empty.png": "empty", "notes.txt": "not a recognised image", "random.bin": "not a recognised image",
            "corrupt.png": "corrupt", "truncated.png": "truncated", "truncated.jpg": "truncated",
            "huge.png": "too large", "huge.dcm": "too large", "tiny.png": "too small", "blank.png": "blank",
            "compressed.dcm": "compressed DICOM transfer syntax", "truncated.dcm": "DICOM",
            "broken_link.png": "broken symbolic link"}


def write_mode_files(folder: Path) -> list[str]:
    """One decodable file per unusual Pillow mode (all must classify fine)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    base = xray(SIZE, seed=11)
    wide = xray(SIZE, seed=12, bits=16)
    rgb = np.repeat(base[..., None], 3, axis=2)
    Image.fromarray(wide).save(folder / "mode_I16.png")
    Image.fromarray(np.dstack([base, np.full_like(base, 255)])).save(folder / "mode_LA.png")
    Image.fromarray(base).convert("P").save(folder / "mode_P.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "mode_CMYK.tif")
    Image.fromarray(rgb).convert("CMYK").save(folder / "mode_CMYK.jpg")
    Image.fromarray(base > 100).save(folder / "mode_1.png")
    Image.fromarray(base.astype(np.float32) / 255.0).save(folder / "mode_F.tif")
    Image.fromarray(np.dstack([rgb, np.full_like(base, 255)])).save(folder / "mode_RGBA.png")
    Image.fromarray(base).convert("PA").save(folder / "mode_PA.tif")
    Image.fromarray(base.astype(np.int32) * 100).save(folder / "mode_I.tif")
    Image.fromarray(rgb).save(folder / "mode_RGB.bmp")
    Image.fromarray(wide).save(folder / "mode_16bit.tif")
    make_dicom(folder / "scan.dcm", xray(SIZE, seed=13, bits=12))
    make_dicom(folder / "noext_dicom", xray(SIZE, seed=14, bits=12), photometric="MONOCHROME1")
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """This file's helpers for the tests (``--import-mode=importlib`` cannot import conftest)."""
    return SimpleNamespace(
        SIZE=SIZE, xray=xray, save_png=save_png, make_dicom=make_dicom, huge_png=huge_png,
        write_bad_files=write_bad_files, write_mode_files=write_mode_files, lung_template=lung_template,
        make_segmenter=make_segmenter, make_classifier=make_classifier, make_models_dir=make_models_dir,
        seg_weights=seg_weights, cls_weights=cls_weights)
