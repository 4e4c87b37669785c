"""Decoding X-ray files to 2-D float32 arrays, torch-free (numpy, Pillow, pydicom).

:func:`load_image` handles PNG, JPEG, BMP and TIFF (8 or 16 bits; grey, grey+alpha, palette,
RGB, RGBA, CMYK, bilevel, 32-bit integer and float) and DICOM. Colour is converted with ITU-R
601 luma, alpha is composited on black (the conventions of ``shared/data``), an EXIF orientation
is applied (the image is decoded as a viewer shows it), and the intensity range of the file is
kept (pre-processing min-max scales later). DICOM goes through pydicom: modality LUT, then the
VOI LUT or window, and MONOCHROME1 is inverted so that bone is bright; compressed transfer
syntaxes need an optional decoder plugin and are otherwise rejected with a message naming it.
Every failure raises :class:`~manet_edge.errors.BadInputError` naming the file and the reason;
sizes are checked from the header, before the pixels are decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from manet_edge.errors import BadInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES

MAX_PIXELS = 100_000_000
"""Images with more pixels than this are rejected before decoding (a CXR is ~3000x3000 = 9 Mpx)."""
MIN_SIDE = 32
"""Images with a side shorter than this cannot hold a chest X-ray."""
MAX_SPAN = 0.99 * float(np.finfo(np.float32).max)
"""A (float) image whose values span more than this would overflow float32 when min-max scaled."""
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"BM": "BMP"}
"""File signatures of the formats Pillow decodes here (a file that starts with one is corrupt, not foreign)."""


class _NotRecognised(BadInputError):
    """Pillow does not recognise the file (see :func:`load_image`: it may still be raw DICOM)."""

_EXIF_ORIENTATION = 0x0112
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_GREY_MODES = ("L", "I", "F")
_COLOUR_MODES = ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_ALPHA_MODES = ("RGBA", "RGBa", "PA", "La")


def is_dicom(path: Path) -> bool:
    """True for a DICOM suffix or the 'DICM' magic at byte 128 (DICOM files often have no suffix)."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to a 2-D float32 array in the file's own intensity scale."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadInputError("broken symbolic link (its target does not exist)", path)
    if not path.exists():
        raise BadInputError("file does not exist", path)
    if path.is_dir():
        raise BadInputError("is a directory, not an image file", path)
    if not path.is_file():
        raise BadInputError("not a regular file (a device, pipe or socket)", path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise BadInputError(f"cannot read file: {exc.strerror or exc}", path) from exc
    if size == 0:
        raise BadInputError("file is empty (0 bytes)", path)
    if is_dicom(path):
        arr = _load_dicom(path, max_pixels)
    else:
        try:
            arr = _load_pillow(path, max_pixels)
        except _NotRecognised as not_an_image:
            if not _may_be_raw_dicom(path):
                raise
            try:  # a DICOM data set written without preamble and file meta, under any name
                arr = _load_dicom(path, max_pixels)
            except BadInputError:
                raise not_an_image from None
    if arr.ndim != 2:
        raise BadInputError(f"decoded to shape {arr.shape}, expected a 2-D grey image", path)
    if min(arr.shape) < MIN_SIDE:
        raise BadInputError(f"image is too small ({arr.shape[1]}x{arr.shape[0]} px; need at least {MIN_SIDE} px a side)", path)
    if not np.isfinite(arr).all():
        raise BadInputError("image contains NaN or infinite values", path)
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo > MAX_SPAN:
        raise BadInputError(f"intensity range is too wide to process (values from {lo:g} to {hi:g}); save the image "
                            "with a usual range (e.g. 0-65535 or 0-1)", path)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _too_large(w: int, h: int, max_pixels: int, path: Path) -> BadInputError:
    return BadInputError(
        f"image is too large ({w}x{h} = {w * h / 1e6:.0f} Mpx; the limit is {max_pixels / 1e6:.0f} Mpx)", path)


def _load_pillow(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 Mpx; the size check below is ours (MAX_PIXELS), so silence it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise _too_large(w, h, max_pixels, path)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # multi-page TIFF: the first page
            im.load()
            if im.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None):
                im = ImageOps.exif_transpose(im)
            return _pil_to_gray(im, path)
    except BadInputError:
        raise
    except UnidentifiedImageError as exc:
        kind = _signature(path)
        if kind is not None:  # e.g. a PNG whose header checksum is wrong: Pillow's PNG reader refuses it
            raise BadInputError(f"corrupt {kind} file: it starts like a {kind} but cannot be decoded "
                                f"({_pillow_reason(path) or exc})", path) from exc
        raise _NotRecognised("not a recognised image file (PNG, JPEG, BMP, TIFF or DICOM)", path) from exc
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"image is too large: {exc}", path) from exc
    except PermissionError as exc:
        raise BadInputError(f"cannot read file: {exc.strerror or exc}", path) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(f"corrupt or truncated image: {exc}", path) from exc


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _signature(path: Path) -> str | None:
    """The image format whose signature ``path`` starts with, else None."""
    head = _head(path)
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _pillow_reason(path: Path) -> str:
    """Why Pillow's reader for the file's own format refuses it (PNG only: the CRC message), else ''."""
    if _signature(path) != "PNG":
        return ""
    from PIL import PngImagePlugin

    try:
        with open(path, "rb") as fh:
            PngImagePlugin.PngImageFile(fh).close()
    except Exception as exc:  # the reason is what we want
        return str(exc)
    return ""


def _may_be_raw_dicom(path: Path) -> bool:
    """True when ``path`` may be a DICOM data set written without preamble and file meta: it starts
    with a tag of an even (standard) group below the pixel data, little-endian."""
    head = _head(path, 4)
    if len(head) < 4:
        return False
    group = int.from_bytes(head[:2], "little")
    return group % 2 == 0 and 0x0002 <= group <= 0x7FE0


def _pil_to_gray(im, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode in _GREY_MODES or mode.startswith("I;16"):
        return np.asarray(im).astype(np.float32)
    if mode in ("LA", "La"):
        a = np.asarray(im.convert("LA") if mode == "La" else im).astype(np.float32)
        return a[..., 0] * (a[..., 1] / 255.0)
    if mode in _ALPHA_MODES:
        im = im.convert("RGBA")
        a = np.asarray(im).astype(np.float32)
        return ((a[..., :3] @ _LUMA) * (a[..., 3] / 255.0)).astype(np.float32)
    if mode in _COLOUR_MODES:
        try:
            rgb = im if mode == "RGB" else im.convert("RGB")
        except ValueError as exc:
            raise BadInputError(f"unsupported image mode '{mode}' (cannot convert it to grey: {exc})", path) from exc
        a = np.asarray(rgb).astype(np.float32)
        return (a[..., :3] @ _LUMA).astype(np.float32)
    raise BadInputError(f"unsupported image mode '{mode}'", path)


def _read_dicom(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        _add_transfer_syntax(ds)  # a preamble but no file meta group
        return ds
    except InvalidDicomError as exc:
        first = exc
    except Exception as exc:  # pydicom raises many types (EOFError, struct.error, ...) on truncated files
        raise BadInputError(f"corrupt or truncated DICOM file: {exc}", path) from exc
    # A DICOM stream without the 128-byte preamble: read it raw, but only trust it with pixels.
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # garbage read as DICOM fails in arbitrary ways
        raise BadInputError(f"not a valid DICOM file: {first}", path) from exc
    if "PixelData" not in ds or "Rows" not in ds:
        raise BadInputError(f"not a valid DICOM file: {first}", path)
    _add_transfer_syntax(ds)
    return ds


def _add_transfer_syntax(ds) -> None:
    """Give a data set read without file meta the transfer syntax it was read in (pydicom needs one
    to decode the pixels; an uncompressed data set is implicit or explicit VR, little or big endian)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is None:
        implicit = True
    uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = uid


def _load_dicom(path: Path, max_pixels: int) -> np.ndarray:
    try:
        import pydicom  # noqa: F401
    except ImportError as exc:  # pragma: no cover - pydicom is a base dependency
        raise BadInputError("DICOM file, but pydicom is not installed (pip install pydicom)", path) from exc
    ds = _read_dicom(path)
    if "PixelData" not in ds:
        raise BadInputError("DICOM file has no pixel data (not an image object, or the file is truncated)", path)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise _too_large(cols, rows, max_pixels, path)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError/... here
        name = getattr(tsyntax, "name", str(tsyntax))
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            raise BadInputError(
                f"compressed DICOM transfer syntax '{name}' ({tsyntax}) cannot be decoded here: "
                "install a decoder plugin (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, "
                "or python-gdcm) or convert the file to uncompressed DICOM", path) from exc
        raise BadInputError(f"cannot decode DICOM pixel data ({name}): {exc}", path) from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # multi-frame: the first frame
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        if photometric != "RGB" and ds.get("SamplesPerPixel", 1) == 3:
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise BadInputError(f"unsupported DICOM pixel layout {arr.shape} ({photometric})", path)
        return (arr.astype(np.float32) @ _LUMA).astype(np.float32)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInputError(f"unsupported DICOM photometric interpretation '{photometric}'", path)
    if arr.ndim != 2:
        raise BadInputError(f"unsupported DICOM pixel layout {arr.shape} ({photometric})", path)
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        out = apply_voi_lut(out, ds)
    out = np.asarray(out, dtype=np.float32)
    if photometric == "MONOCHROME1":
        out = out.max() + out.min() - out  # low values are bright in MONOCHROME1
    return out
