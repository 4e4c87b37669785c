"""Triton model repositories and their ``config.pbtxt`` files (protobuf text format of Triton's
``ModelConfig``; ``tests/serve`` parses every file written here with Triton's own schema,
``tritonclient.grpc.model_config_pb2``).

* :func:`write_serve_repository`: ``manet-edge serve``'s repository, one Python-backend model
  ``manet_edge`` that runs the whole pipeline in-process on the installed backend.
* :func:`write_export_repository`: ``manet-edge export --format triton``: ``segmenter`` and
  ``classifier`` as ``onnxruntime`` models (``tensorrt_plan`` too when engines are given), and
  ``manet_edge`` as a Python BLS model that decodes, pre-processes, calls both models through
  Triton, cleans the mask, skips the classifier for an empty mask and returns the row.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from manet_edge.errors import ManetEdgeError, OutputExistsError

SERVE_MODEL = "manet_edge"
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Batching:
    """Dynamic batching and instances (the ``serve``/``export --format triton`` options)."""

    max_batch_size: int = 4
    queue_delay_us: int = 2000
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ManetEdgeError(f"max batch size must be >= 1, got {self.max_batch_size}")
        if self.queue_delay_us < 0:
            raise ManetEdgeError(f"queue delay must be >= 0 microseconds, got {self.queue_delay_us}")
        if self.instances < 1:
            raise ManetEdgeError(f"instances must be >= 1, got {self.instances}")


def _q(text: str) -> str:
    return json.dumps(str(text))  # a protobuf text-format string literal (JSON escapes are valid there)


def _tensor(name: str, dtype: str, dims: Sequence[int], *, ragged: bool = False, optional: bool = False) -> str:
    extra = (" allow_ragged_batch: true" if ragged else "") + (" optional: true" if optional else "")
    return f'  {{ name: {_q(name)} data_type: {dtype} dims: [ {", ".join(str(d) for d in dims)} ]{extra} }}'


def config_text(*, name: str, backend: str | None = None, platform: str | None = None, batching: Batching,
                inputs: Sequence[str], outputs: Sequence[str], parameters: dict[str, str] | None = None,
                kind: str = "KIND_CPU", default_model: str | None = None) -> str:
    """One ``config.pbtxt``: name, backend/platform, max batch size, inputs, outputs, dynamic
    batching with the queue delay, instance group, string parameters."""
    lines = [f"name: {_q(name)}"]
    if backend:
        lines.append(f"backend: {_q(backend)}")
    if platform:
        lines.append(f"platform: {_q(platform)}")
    if default_model:
        lines.append(f"default_model_filename: {_q(default_model)}")
    lines.append(f"max_batch_size: {batching.max_batch_size}")
    lines += ["input [", ",\n".join(inputs), "]", "output [", ",\n".join(outputs), "]"]
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {batching.queue_delay_us} }}")
    lines.append(f"instance_group [ {{ kind: {kind} count: {batching.instances} }} ]")
    for key, value in (parameters or {}).items():
        lines.append(f"parameters {{ key: {_q(key)} value {{ string_value: {_q(value)} }} }}")
    return "\n".join(lines) + "\n"


PIPELINE_INPUTS = (_tensor("IMAGE", "TYPE_UINT8", [-1], ragged=True),)
PIPELINE_OUTPUTS = (_tensor("ROW", "TYPE_UINT8", [-1]), _tensor("PROBABILITIES", "TYPE_FP32", [5]),
                    _tensor("MASK", "TYPE_UINT8", [-1, -1]))


def _fresh(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{folder} exists and is not empty; pass --overwrite to replace it, or choose "
                                    "another folder")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def write_serve_repository(folder: Path, *, batching: Batching, backend: str = "onnxruntime",
                           precision: str | None = None, models: Path | None = None, threads: int | None = None,
                           overwrite: bool = True) -> Path:
    """``folder/manet_edge/{config.pbtxt, 1/model.py}``: the in-process pipeline model."""
    folder = Path(folder)
    _fresh(folder, overwrite)
    params = {"backend": backend}
    if precision:
        params["precision"] = precision
    if models is not None:
        params["models"] = str(Path(models).resolve())
    if threads:
        params["threads"] = str(threads)
    model = folder / SERVE_MODEL
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(config_text(name=SERVE_MODEL, backend="python", batching=batching,
                                                    inputs=PIPELINE_INPUTS, outputs=PIPELINE_OUTPUTS,
                                                    parameters=params))
    (model / "1" / "model.py").write_text(
        '"""manet-edge serve: the whole pipeline in this model (see manet_edge/serve/serve_model.py)."""\n'
        "from manet_edge.serve.serve_model import TritonPythonModel  # noqa: F401\n")
    return folder


def _onnx_tensors(path: Path, card_size: int, kind: str) -> tuple[list[str], list[str]]:
    """config.pbtxt inputs/outputs of an exported model, from the ONNX graph and its model card."""
    import onnx

    from manet_edge import CLASSES

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    ins, outs = [], []
    for value in graph.input:
        if value.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim][1:]
        if kind == "seg" and value.name == "image":
            dims = [dims[0] if dims and dims[0] > 0 else 1, card_size, card_size]
        elif value.name in ("image", "mask"):
            dims = [dims[0] if dims and dims[0] > 0 else 1, card_size, card_size]
        ins.append(_tensor(value.name, _ONNX_TYPES[value.type.tensor_type.elem_type], dims))
    for value in graph.output:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim][1:]
        if kind == "cls" and value.name == "logits":
            dims = [len(CLASSES)]
        elif kind == "seg" and value.name == "logits":
            dims = [1, card_size, card_size]
        outs.append(_tensor(value.name, _ONNX_TYPES[value.type.tensor_type.elem_type], dims))
    return ins, outs


def _onnx_input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    return [v.name for v in graph.input if v.name not in init]


_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8",
               16: "TYPE_BF16"}


def write_export_repository(folder: Path, *, models: Path | None = None, batching: Batching = Batching(),
                            engines: dict[str, Path] | None = None, kind: str = "KIND_CPU",
                            overwrite: bool = False) -> list[Path]:
    """The NGC/Jetson repository: segmenter + classifier (onnxruntime; tensorrt_plan copies when
    ``engines`` names them) and the BLS pipeline model ``manet_edge``. Returns the files written."""
    from manet_edge.assets import model_paths
    from manet_edge.metadata import read_onnx_card

    (seg_path, cls_path) = model_paths(models, ".onnx")
    folder = Path(folder)
    _fresh(folder, overwrite)
    written: list[Path] = []
    cards = {}
    inputs_of: dict[str, list[str]] = {}
    for role, path in (("segmenter", seg_path), ("classifier", cls_path)):
        card = read_onnx_card(str(path))
        cards[role] = card
        ins, outs = _onnx_tensors(path, card.input_size, card.kind)
        inputs_of[role] = _onnx_input_names(path)
        model_dir = folder / role
        (model_dir / "1").mkdir(parents=True)
        shutil.copyfile(path, model_dir / "1" / "model.onnx")
        text = config_text(name=role, backend="onnxruntime", batching=batching, inputs=ins, outputs=outs, kind=kind,
                           parameters={"manet_edge_card": json.dumps(_card_dict(card))})
        (model_dir / "config.pbtxt").write_text(text)
        written += [model_dir / "config.pbtxt", model_dir / "1" / "model.onnx"]
        engine = (engines or {}).get(role)
        if engine is not None:
            trt_dir = folder / f"{role}_trt"
            (trt_dir / "1").mkdir(parents=True)
            shutil.copyfile(engine, trt_dir / "1" / "model.plan")
            (trt_dir / "config.pbtxt").write_text(config_text(
                name=f"{role}_trt", backend="tensorrt", batching=batching, inputs=ins, outputs=outs, kind="KIND_GPU"))
            written += [trt_dir / "config.pbtxt", trt_dir / "1" / "model.plan"]
    bls = folder / SERVE_MODEL
    (bls / "1").mkdir(parents=True)
    params = {"segmenter_model": "segmenter_trt" if engines and "segmenter" in engines else "segmenter",
              "classifier_model": "classifier_trt" if engines and "classifier" in engines else "classifier",
              "segmenter_card": json.dumps(_card_dict(cards["segmenter"])),
              "classifier_card": json.dumps(_card_dict(cards["classifier"])),
              "segmenter_inputs": ",".join(inputs_of["segmenter"]),
              "classifier_inputs": ",".join(inputs_of["classifier"])}
    (bls / "config.pbtxt").write_text(config_text(name=SERVE_MODEL, backend="python", batching=batching,
                                                  inputs=PIPELINE_INPUTS, outputs=PIPELINE_OUTPUTS,
                                                  parameters=params))
    shutil.copyfile(_HERE / "bls_model.py", bls / "1" / "model.py")
    written += [bls / "config.pbtxt", bls / "1" / "model.py"]
    return written


def _card_dict(card: Any) -> dict[str, Any]:
    return json.loads(card.to_json())
