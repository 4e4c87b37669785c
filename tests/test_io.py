"""manet_edge.io: decoding of every supported format and a clear error for every bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from manet_edge.errors import BadInputError
from manet_edge.io import is_dicom, load_image

SIZE = 64


def test_png_8_and_16_bit_keep_their_range(tmp_path, synth):
    a8, a16 = synth.xray(SIZE, 1), synth.xray(SIZE, 1, bits=16)
    got8 = load_image(synth.save_png(tmp_path / "a8.png", a8))
    got16 = load_image(synth.save_png(tmp_path / "a16.png", a16))
    assert got8.dtype == np.float32 and got8.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(got8, a8.astype(np.float32))
    np.testing.assert_array_equal(got16, a16.astype(np.float32))


def test_every_unusual_mode_decodes_to_grey(tmp_path, synth):
    names = synth.write_mode_files(tmp_path)
    for name in names:
        arr = load_image(tmp_path / name)
        assert arr.shape == (SIZE, SIZE) and arr.dtype == np.float32, name
        assert np.isfinite(arr).all() and arr.max() > arr.min(), name


def test_rgb_uses_luma_and_alpha_composites_on_black(tmp_path, synth):
    rgb = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgb[..., 0], rgb[..., 3] = 200, 255
    rgb[: SIZE // 2, :, 3] = 0
    arr = load_image(synth.save_png(tmp_path / "rgba.png", rgb))
    assert arr[-1, 0] == pytest.approx(0.299 * 200, abs=1e-3)
    assert arr[0, 0] == 0.0


def test_exif_orientation_is_applied(tmp_path, synth):
    img = Image.fromarray(synth.xray((40, 80), 2))  # 80 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rot.jpg").shape == (80, 40)


def test_multipage_tiff_uses_first_page(tmp_path, synth):
    pages = [Image.fromarray(synth.xray(SIZE, s)) for s in (1, 2)]
    pages[0].save(tmp_path / "multi.tif", save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(load_image(tmp_path / "multi.tif"), np.asarray(pages[0], np.float32))


@pytest.mark.parametrize("name", ["empty.png", "notes.txt", "random.bin", "corrupt.png", "truncated.png",
                                  "truncated.jpg", "huge.png", "huge.dcm", "tiny.png", "compressed.dcm",
                                  "truncated.dcm", "broken_link.png"])
def test_bad_files_raise_named_errors(tmp_path, name, synth):
    expected = synth.write_bad_files(tmp_path)
    with pytest.raises(BadInputError) as info:
        load_image(tmp_path / name)
    assert expected[name].lower() in str(info.value).lower()
    assert str(tmp_path / name) in str(info.value) and info.value.path == str(tmp_path / name)


def test_missing_file_directory_and_float_nan(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(BadInputError, match="directory"):
        load_image(tmp_path)
    arr = np.ones((SIZE, SIZE), np.float32)
    arr[3, 3] = np.nan
    Image.fromarray(arr).save(tmp_path / "nan.tif")
    with pytest.raises(BadInputError, match="NaN"):
        load_image(tmp_path / "nan.tif")


def test_huge_image_rejected_before_decoding(tmp_path, synth):
    path = synth.huge_png(tmp_path / "big.png", 12000, 9000)  # 108 Mpx: under Pillow's bomb limit, over ours
    with pytest.raises(BadInputError, match="too large .*12000x9000"):
        load_image(path)
    with pytest.raises(BadInputError, match="too large"):
        load_image(synth.save_png(tmp_path / "small.png", synth.xray(SIZE)), max_pixels=SIZE * SIZE - 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path, synth):
    path = synth.save_png(tmp_path / "locked.png", synth.xray(SIZE))
    path.chmod(0)
    with pytest.raises(BadInputError, match="cannot read"):
        load_image(path)


def test_unreadable_file_message(tmp_path, monkeypatch, synth):
    path = synth.save_png(tmp_path / "locked.png", synth.xray(SIZE))
    real_open = open

    def deny(file, *a, **kw):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *a, **kw)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(BadInputError, match="cannot read file: Permission denied"):
        load_image(path)


# -- DICOM ------------------------------------------------------------------------------------
def test_dicom_monochrome2_and_detection_without_suffix(tmp_path, synth):
    pixels = synth.xray(SIZE, 3, bits=12)
    plain = synth.make_dicom(tmp_path / "a.dcm", pixels)
    raw = synth.make_dicom(tmp_path / "IM0001", pixels)
    assert is_dicom(raw) and not is_dicom(synth.save_png(tmp_path / "x.png", pixels.astype(np.uint8)))
    np.testing.assert_array_equal(load_image(plain), pixels.astype(np.float32))
    np.testing.assert_array_equal(load_image(raw), pixels.astype(np.float32))


def test_dicom_monochrome1_is_inverted(tmp_path, synth):
    pixels = synth.xray(SIZE, 3, bits=12)
    m2 = load_image(synth.make_dicom(tmp_path / "m2.dcm", pixels))
    m1 = load_image(synth.make_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, m2.max() + m2.min() - m2)
    assert np.corrcoef(m1.ravel(), m2.ravel())[0, 1] < -0.99


def test_dicom_voi_window_and_rescale(tmp_path, synth):
    pixels = np.tile(np.linspace(0, 4000, SIZE, dtype=np.float32), (SIZE, 1)).astype(np.uint16)
    windowed = load_image(synth.make_dicom(tmp_path / "w.dcm", pixels, window=(2000.0, 1000.0)))
    # Linear VOI: values below the window map to the minimum, above to the maximum.
    assert windowed[0, 0] == windowed.min() and windowed[0, -1] == windowed.max()
    inside = windowed[0, (pixels[0] > 1600) & (pixels[0] < 2400)]
    assert np.all(np.diff(inside) > 0)
    assert np.sum(windowed[0] == windowed.min()) > SIZE // 4
    rescaled = load_image(synth.make_dicom(tmp_path / "r.dcm", pixels, slope=2.0, intercept=-100.0))
    np.testing.assert_allclose(rescaled, pixels.astype(np.float32) * 2 - 100)


def test_dicom_without_preamble_is_read(tmp_path, synth):
    pixels = synth.xray(SIZE, 6, bits=12)
    path = synth.make_dicom(tmp_path / "nopre.dcm", pixels, preamble=False)
    np.testing.assert_array_equal(load_image(path), pixels.astype(np.float32))


def test_dicom_compressed_is_rejected_clearly(tmp_path, synth):
    path = synth.make_dicom(tmp_path / "c.dcm", np.zeros((SIZE, SIZE), np.uint16), compressed=True)
    with pytest.raises(BadInputError, match="compressed DICOM transfer syntax 'JPEG Baseline") as info:
        load_image(path)
    assert "pylibjpeg" in str(info.value) and "convert" in str(info.value)


def test_dicom_with_short_pixel_data(tmp_path, synth):
    path = synth.make_dicom(tmp_path / "short.dcm", synth.xray(SIZE, 1, bits=12))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(BadInputError, match="DICOM"):
        load_image(path)


def test_non_dicom_with_dcm_suffix(tmp_path):
    (tmp_path / "fake.dcm").write_text("hello, not DICOM at all" * 10)
    with pytest.raises(BadInputError, match="not a valid DICOM file|DICOM"):
        load_image(tmp_path / "fake.dcm")


def _raw_dicom(path, array, *, implicit: bool):
    """A DICOM data set written with no preamble and no file meta group (what some tools export)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(array, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=False, implicit_vr=implicit, little_endian=True)
    return path


@pytest.mark.parametrize("name,implicit", [("raw.dcm", True), ("raw_explicit.dcm", False), ("raw_no_suffix", True)])
def test_raw_dicom_without_file_meta_decodes(tmp_path, synth, name, implicit):
    a = synth.xray(SIZE, 5, bits=12)
    got = load_image(_raw_dicom(tmp_path / name, a, implicit=implicit))
    np.testing.assert_array_equal(got, a.astype(np.float32))


def test_a_png_with_a_bad_checksum_is_corrupt_not_foreign(tmp_path, synth):
    data = bytearray(synth.save_png(tmp_path / "good.png", synth.xray(SIZE, 2)).read_bytes())
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    (tmp_path / "badcrc.png").write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"corrupt PNG file.*checksum"):
        load_image(tmp_path / "badcrc.png")


def test_a_float_tiff_beyond_float32_range_is_an_input_error(tmp_path, synth):
    wide = synth.xray(SIZE, 3).astype(np.float64) / 255 * 6.8e38 - 3.4e38
    Image.fromarray(wide.astype(np.float32)).save(tmp_path / "wide.tif")
    with pytest.raises(BadInputError, match="intensity range is too wide"):
        load_image(tmp_path / "wide.tif")
    big = synth.xray(SIZE, 3).astype(np.float32) * 1e36  # large but within float32: fine
    Image.fromarray(big).save(tmp_path / "big.tif")
    assert np.isfinite(load_image(tmp_path / "big.tif")).all()


def test_a_wide_float_tiff_is_an_input_error_row_not_a_segmenter_error(tmp_path, synth, seg_model, cls_model):
    from manet_edge.pipeline import Pipeline, walk_folder
    from manet_edge.runtime import create_runner

    wide = synth.xray(SIZE, 3).astype(np.float64) / 255 * 6.8e38 - 3.4e38
    Image.fromarray(wide.astype(np.float32)).save(tmp_path / "wide.tif")
    with Pipeline(create_runner(seg_model, threads=1), create_runner(cls_model, threads=1)) as pipe:
        (row,) = pipe.run(walk_folder(tmp_path))
    assert row.status == "error" and "intensity range" in row.error and "segmenter" not in row.error
