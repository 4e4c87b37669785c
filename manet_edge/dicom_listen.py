"""``manet-edge listen``: a DICOM Storage SCP (pynetdicom) that classifies every CR/DX image it receives.

Per received instance (C-STORE), in the association's thread:

1. the data set is written as received to ``<out>/received/<SOPInstanceUID>.dcm`` (atomically);
2. the pipeline runs on that file (:class:`manet_edge.serve.engine.BytesPipeline`: the same decode,
   models and calibration as ``manet-edge infer``);
3. its row is appended to ``<out>/predictions.jsonl`` (one JSON object a line; ``file`` is the
   received file's name) and, when it was classified, ``<out>/<SOPInstanceUID>.SR.dcm`` and
   ``.SEG.dcm`` are written (:mod:`manet_edge.dicom_out`);
4. with a destination (``--forward HOST:PORT``), the SR and SEG are sent there by C-STORE.

The C-STORE is answered *Success* once the received data set is safely on disk (0x0000); a data set
that cannot be written gets 0xA700 (out of resources). An image the pipeline refuses (blank, no
lung found, unreadable pixel data) keeps its received file and gets an error row, and the listener
goes on. A name already taken (the same instance sent twice) gets ``-2``, ``-3``...: nothing
written before is replaced.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manet_edge.errors import BackendUnavailableError, ManetEdgeError

ACCEPTED = ("1.2.840.10008.5.1.4.1.1.1",      # Computed Radiography Image Storage
            "1.2.840.10008.5.1.4.1.1.1.1",    # Digital X-Ray Image Storage - For Presentation
            "1.2.840.10008.5.1.4.1.1.1.1.1")  # Digital X-Ray Image Storage - For Processing


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    ae_title: str = "ANY-SCP"

    @classmethod
    def parse(cls, text: str, ae_title: str = "ANY-SCP") -> "Destination":
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ManetEdgeError(f"--forward must be HOST:PORT, got {text!r}")
        return cls(host, int(port), ae_title)


def _pynetdicom():
    try:
        import pynetdicom
    except ImportError as exc:
        raise BackendUnavailableError("dicom", "dicom", f"pynetdicom is not installed: {exc}") from None
    return pynetdicom


def _free_name(folder: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``...: the first name no received file, SR or SEG has yet."""
    n, name = 1, stem
    while any(p.exists() for p in (folder / "received" / f"{name}.dcm", folder / f"{name}.SR.dcm",
                                   folder / f"{name}.SEG.dcm")):
        n += 1
        name = f"{stem}-{n}"
    return name


class Listener:
    """The SCP: :meth:`start` (non-blocking), :meth:`stop`. ``engine`` is a BytesPipeline."""

    def __init__(self, engine, out: Path, *, host: str = "127.0.0.1", port: int = 11112, ae_title: str = "MANET-EDGE",
                 forward: Destination | None = None, log=None):
        self.engine = engine
        self.out = Path(out)
        self.host, self.port, self.ae_title = host, port, ae_title
        self.forward = forward
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._server = None
        self._names = threading.Lock()
        self.handled = 0

    def start(self) -> "Listener":
        pn = _pynetdicom()
        (self.out / "received").mkdir(parents=True, exist_ok=True)
        ae = pn.AE(ae_title=self.ae_title)
        for uid in ACCEPTED:
            ae.add_supported_context(uid)
        ae.add_supported_context(pn.sop_class.Verification)
        self._server = ae.start_server((self.host, self.port), block=False,
                                       evt_handlers=[(pn.evt.EVT_C_STORE, self._on_store)])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- one C-STORE -------------------------------------------------------------------------
    def _on_store(self, event) -> int:
        from manet_edge.fileutil import atomic_write_bytes

        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            uid = str(getattr(ds, "SOPInstanceUID", "") or "unknown")
            with self._names:
                stem = _free_name(self.out, uid)
                received = self.out / "received" / f"{stem}.dcm"
                received.touch()  # reserve the name
            import io

            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            atomic_write_bytes(received, buf.getvalue())
        except Exception as exc:  # cannot even store it: tell the sender
            self.log(f"error: cannot store an instance from {event.assoc.requestor.ae_title}: {exc}")
            return 0xA700
        try:
            self._process(received, stem)
        except Exception as exc:  # a failure after storing is this image's error, not the listener's
            self.log(f"error: {received.name}: {type(exc).__name__}: {exc}")
            self._append_row({"file": received.name, "status": "error", "error": f"{type(exc).__name__}: {exc}"})
        self.handled += 1
        return 0x0000

    def _append_row(self, row: dict[str, Any]) -> None:
        with self._names, open(self.out / "predictions.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

    def _process(self, received: Path, stem: str) -> None:
        from manet_edge import dicom_out

        answer = self.engine.run([received.read_bytes()], names=[received.name], want_mask=True)[0]
        row = answer.row
        if not answer.ok:
            self.log(f"error: {received.name}: {row['error']}")
            self._append_row(row)
            return
        source = dicom_out.read_source(received)
        result = dicom_out.build(source, row, answer.mask)
        written = dicom_out.write(result, self.out / f"{stem}.SR.dcm", self.out / f"{stem}.SEG.dcm")
        row["outputs"] = [p.name for p in written]
        if self.forward is not None:
            row["forwarded"] = self._send([result.sr, result.seg] if result.seg is not None else [result.sr])
        self._append_row(row)
        self.log(f"{received.name}: {row['prediction']} ({', '.join(row['outputs'])})")

    def _send(self, datasets) -> bool:
        pn = _pynetdicom()
        dest = self.forward
        ae = pn.AE(ae_title=self.ae_title)
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID)
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            self.log(f"error: cannot associate with {dest.ae_title}@{dest.host}:{dest.port}; results kept in {self.out}")
            return False
        ok = True
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                if not status or getattr(status, "Status", 0xFFFF) != 0x0000:
                    ok = False
                    self.log(f"error: {dest.ae_title} refused {ds.SOPInstanceUID} (status {status})")
        finally:
            assoc.release()
        return ok
