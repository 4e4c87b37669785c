"""DICOM in and out: ``infer --dicom-out`` and ``manet-edge listen`` (pynetdicom on 127.0.0.1).

Needs the ``dicom`` extra (highdicom, pynetdicom); skipped with that reason without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hd = pytest.importorskip("highdicom", reason="the dicom extra is not installed (pip install 'manet-edge[dicom]')")
pn = pytest.importorskip("pynetdicom", reason="the dicom extra is not installed (pip install 'manet-edge[dicom]')")

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manet_edge" / "assets" / "samples"
SR_CLASS, SEG_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.66.4"


def make_dx(path: Path, pixels: np.ndarray, *, study: str | None = None) -> Path:
    """A DX For Presentation instance (16-bit, 12 stored) with the attributes a PACS sends."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "DX", "Synthetic^Test", "SYN", "O", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "A1", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dx")
    for png in sorted(SAMPLES.glob("*.png"))[:3]:
        make_dx(folder / (png.stem + ".dcm"), np.asarray(Image.open(png).convert("L")).astype(np.uint16) * 16)
    return folder


@pytest.fixture(scope="module")
def infer_dicom(dicom_folder, tmp_path_factory):
    from manet_edge.commands.infer import run_infer

    out = tmp_path_factory.mktemp("infer_dcm")
    assert run_infer(folder=dicom_folder, out=out, save_masks=True, progress=False, dicom_out=out / "dicom") == 0
    rows = {r["file"]: r for r in json.loads((out / "predictions.json").read_text())["rows"]}
    return out, rows


def sr_values(sr) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "NUM":
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "CODE":
            out[name] = item.ConceptCodeSequence[0].CodeValue
        elif item.ValueType == "TEXT":
            out[name] = item.TextValue
        elif item.ValueType == "IMAGE":
            ref = item.ReferencedSOPSequence[0]
            out[name] = (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID)
    return out


def check_pair(source_path: Path, sr_path: Path, seg_path: Path, row: dict, png_mask: np.ndarray) -> tuple[str, str]:
    from manet_edge import CLASSES
    from manet_edge.dicom_out import CLASS_CODES

    src = pydicom.dcmread(source_path)
    sr = hd.sr.srread(sr_path)
    seg = hd.seg.segread(seg_path)
    uids = {src.SOPInstanceUID, sr.SOPInstanceUID, seg.SOPInstanceUID, sr.SeriesInstanceUID, seg.SeriesInstanceUID,
            src.SeriesInstanceUID}
    assert len(uids) == 6  # new instances in new series
    for obj in (sr, seg):
        assert obj.StudyInstanceUID == src.StudyInstanceUID and obj.PatientID == src.PatientID
    assert sr.SOPClassUID == SR_CLASS and seg.SOPClassUID == SEG_CLASS
    # SR: evidence and the image reference point at the source; the values are the row's
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == src.SOPInstanceUID
    values = sr_values(sr)
    assert values["121324"] == (src.SOPClassUID, src.SOPInstanceUID)
    assert values["121071"] == CLASS_CODES[row["prediction"]][0]
    for c in CLASSES:
        assert values[f"P-{c.upper()}"] == pytest.approx(row[f"p_{c}"], abs=1e-5)
    assert "NOT A MEDICAL DEVICE" in values["121106"]
    # SEG: references the source instance; the mask is the PNG mask pixel for pixel
    assert seg.get_source_image_uids() == [(src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID)]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    mask = seg.get_total_pixel_matrix() if seg.number_of_frames > 1 else seg.pixel_array
    mask = np.asarray(mask).reshape(src.Rows, src.Columns)
    assert mask.shape == png_mask.shape
    np.testing.assert_array_equal(mask > 0, png_mask > 0)
    assert 0.1 < (mask > 0).mean() < 0.7
    return sr.SOPInstanceUID, seg.SOPInstanceUID


def test_infer_dicom_out(dicom_folder, infer_dicom):
    out, rows = infer_dicom
    assert len(rows) == 3
    for name, row in rows.items():
        assert row["status"] == "ok"
        stem = Path(name).stem
        png = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        check_pair(dicom_folder / name, out / "dicom" / f"{stem}.SR.dcm", out / "dicom" / f"{stem}.SEG.dcm", row, png)


def test_infer_dicom_out_refuses_to_overwrite(dicom_folder, infer_dicom):
    from manet_edge.commands.infer import run_infer
    from manet_edge.errors import OutputExistsError

    out, _ = infer_dicom
    before = {p: p.stat().st_mtime_ns for p in (out / "dicom").iterdir()}
    with pytest.raises(OutputExistsError):
        run_infer(folder=dicom_folder, out=out / "again", progress=False, dicom_out=out / "dicom")
    assert {p: p.stat().st_mtime_ns for p in (out / "dicom").iterdir()} == before


class Collector:
    """A Storage SCP on 127.0.0.1 (the forward destination) keeping what it receives in memory."""

    def __init__(self):
        self.received: list[Dataset] = []
        ae = pn.AE(ae_title="DEST")
        ae.add_supported_context(SR_CLASS)
        ae.add_supported_context(SEG_CLASS)
        from manet_edge.serve.tritonserver import free_port

        self.port = free_port()

        def store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(pn.evt.EVT_C_STORE, store)])


def send(port: int, paths: list[Path]) -> list[int]:
    ae = pn.AE(ae_title="TEST-SCU")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title="MANET-EDGE")
    assert assoc.is_established
    try:
        return [assoc.send_c_store(pydicom.dcmread(p)).Status for p in paths]
    finally:
        assoc.release()


def test_listen_loopback(dicom_folder, infer_dicom, tmp_path):
    from manet_edge.serve.tritonserver import free_port

    infer_out, rows = infer_dicom
    dest = Collector()
    port = free_port()
    out = tmp_path / "listen"
    log = tmp_path / "listen.log"
    cmd = [sys.executable, "-m", "cli", "listen", "--out", str(out), "--host", "127.0.0.1", "--port", str(port),
           "--forward", f"127.0.0.1:{dest.port}", "--forward-ae-title", "DEST"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"listening as" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        blank = make_dx(tmp_path / "blank.dcm", np.full((128, 128), 100, np.uint16))
        sources = sorted(dicom_folder.glob("*.dcm"))
        assert send(port, [sources[0], blank, *sources[1:]]) == [0, 0, 0, 0]
        deadline = time.monotonic() + 60
        jsonl = out / "predictions.jsonl"
        while not jsonl.exists() or len(jsonl.read_text().splitlines()) < 4 or len(dest.received) < 6:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        got = [json.loads(line) for line in jsonl.read_text().splitlines()]
        bad = [r for r in got if r["status"] != "ok"]
        assert len(bad) == 1 and "blank" in bad[0]["error"]
        forwarded = {ds.SOPInstanceUID for ds in dest.received}
        for path in sources:
            uid = pydicom.dcmread(path).SOPInstanceUID
            row = next(r for r in got if r["file"] == f"{uid}.dcm")
            assert row["forwarded"] is True
            ref = rows[path.name]
            assert row["prediction"] == ref["prediction"]
            png = np.asarray(Image.open(infer_out / "masks" / f"{path.stem}.png"))
            sr_uid, seg_uid = check_pair(out / "received" / f"{uid}.dcm", out / f"{uid}.SR.dcm", out / f"{uid}.SEG.dcm",
                                         row, png)
            assert {sr_uid, seg_uid} <= forwarded
        # stop: SIGTERM ends it with 143
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        assert "listener stopped after 4 instance(s)" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        dest.server.shutdown()
