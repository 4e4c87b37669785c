"""Fakes for the engine tests: a numpy-backed CUDA backend and a recording ``tensorrt`` module.

Loaded by conftest.py (by file path, so the test folder need not be a package). The fakes
record what our code asks of CUDA and TensorRT; the tests assert our behaviour, not the fakes'.
"""

from __future__ import annotations


# ---------------------------------------------------------------------------------------------
# A fake CUDA backend: numpy "device memory", a stream that runs ops at once or records them
# ---------------------------------------------------------------------------------------------

class FakeCudaApi:
    name = "fake-cuda"
    supports_graphs = True

    def __init__(self):
        import numpy as np

        self.np = np
        self.device = {}  # ptr -> np.uint8 array
        self.host = {}
        self.next_ptr = 0x1000
        self.capturing = None
        self.log = []  # ("htod"|"dtoh"|"kernel"|"graph_launch", ...)
        self.graphs_instantiated = 0
        self.freed = []

    def malloc(self, nbytes):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 256
        self.device[ptr] = self.np.zeros(nbytes, self.np.uint8)
        return ptr

    def free(self, ptr):
        self.freed.append(ptr)
        del self.device[ptr]

    def malloc_host(self, nbytes):
        arr = self.np.zeros(max(nbytes, 1), self.np.uint8)
        ptr = int(arr.ctypes.data)
        self.host[ptr] = arr
        return ptr, arr[:nbytes]

    def free_host(self, ptr):
        self.freed.append(ptr)
        del self.host[ptr]

    def stream_create(self):
        return "stream0"

    def stream_handle(self, stream):
        return 42

    def stream_synchronize(self, stream):
        self.log.append(("sync",))

    def stream_destroy(self, stream):
        self.log.append(("stream_destroy",))

    def _submit(self, op, fn):
        if self.capturing is not None:
            self.capturing.append((op, fn))
        else:
            self.log.append((op,))
            fn()

    def memcpy_htod_async(self, dst, src_host, nbytes, stream):
        def run():
            self.device[dst][:nbytes] = self.host[src_host][:nbytes]
        self._submit("htod", run)

    def memcpy_dtoh_async(self, dst_host, src, nbytes, stream):
        def run():
            self.host[dst_host][:nbytes] = self.device[src][:nbytes]
        self._submit("dtoh", run)

    def kernel(self, fn):
        self._submit("kernel", fn)

    def begin_capture(self, stream):
        self.capturing = []

    def end_capture(self, stream):
        graph, self.capturing = self.capturing, None
        return graph

    def graph_instantiate(self, graph):
        self.graphs_instantiated += 1
        return list(graph)

    def graph_launch(self, graph_exec, stream):
        self.log.append(("graph_launch",))
        for _op, fn in graph_exec:
            fn()

    def graph_destroy(self, graph, graph_exec):
        self.log.append(("graph_destroy",))

    def device_info(self, device=0):
        from manet_edge.runtime.cuda import DeviceInfo

        return DeviceInfo(self.gpu_name, self.cc, "12.6", "12.8")

    gpu_name = "Fake RTX 4090"
    cc = "8.9"



# ---------------------------------------------------------------------------------------------
# A fake ``tensorrt`` module: records builder calls; its "engine" runs a numpy kernel
# ---------------------------------------------------------------------------------------------

def make_fake_trt(version: str = "10.3.0", cuda: FakeCudaApi | None = None):
    """A module object standing in for ``tensorrt`` (version 10.x has precision flags, 11.x not)."""
    import enum
    import json
    import types

    import numpy as np

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    rec = types.SimpleNamespace(flags_set=[], flags_cleared=[], network_flags=None, profiles=[], pool_limits={},
                                cache_in=None, cache_set_ok=None, verbosity=None, monitor=None, dla=None,
                                device_type=None, builds=0, force_layer_type=None, parse_ok=True,
                                context_shapes=[], cache_compatible=True, extra_layers=[])
    trt.rec = rec
    flags = {"TF32": 0, "GPU_FALLBACK": 1, "REFIT": 2}
    if major < 11:
        flags.update({"FP16": 3, "INT8": 4})
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                     {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.ProfilingVerbosity = types.SimpleNamespace(LAYER_NAMES_ONLY="names", DETAILED="detailed")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.DeviceType = types.SimpleNamespace(GPU="gpu", DLA="dla")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="json", ONELINE="oneline")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")

    class ILogger:
        Severity = enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

        def __init__(self, *a):
            pass

    class Logger(ILogger):
        WARNING = 2

        def log(self, severity, msg):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.ILogger, trt.Logger, trt.IProgressMonitor = ILogger, Logger, IProgressMonitor
    trt.nptype = lambda dt: {"float32": np.float32, "float16": np.float16}[dt]

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.fp16_onnx = flags, [], False

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            import onnx

            if not rec.parse_ok:
                self.num_errors = 1
                return False
            model = onnx.load(path)
            inits = {t.name for t in model.graph.initializer}
            for vi in model.graph.input:
                if vi.name not in inits:
                    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
                    self.network.inputs.append(Tensor(vi.name, shape))
            self.network.fp16_onnx = any(n.op_type == "Cast" for n in model.graph.node)
            return True

        def get_error(self, i):
            return "fake parse error: unsupported node"

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"|timed"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self):
            self.flags, self.cache = set(), None
            self.profiling_verbosity = self.progress_monitor = self.default_device_type = self.DLA_core = None

        def set_flag(self, f):
            self.flags.add(f.name)
            rec.flags_set.append(f.name)

        def clear_flag(self, f):
            self.flags.discard(f.name)
            rec.flags_cleared.append(f.name)

        def set_memory_pool_limit(self, pool, size):
            rec.pool_limits[pool] = size

        def add_optimization_profile(self, p):
            rec.profiles.append(p.shapes)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = rec.cache_compatible or not cache.data
            if ok:
                self.cache = cache
                rec.cache_in = cache.data
            return ok

        def get_timing_cache(self):
            return self.cache

    class Builder:
        num_DLA_cores = 0

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            rec.network_flags = flags
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.builds += 1
            rec.verbosity, rec.monitor = config.profiling_verbosity, config.progress_monitor
            rec.dla, rec.device_type = config.DLA_core, config.default_device_type
            if config.progress_monitor is not None:  # the real builder reports phases
                config.progress_monitor.phase_start("Building engine", None, 2)
                config.progress_monitor.step_complete("Building engine", 0)
                config.progress_monitor.phase_finish("Building engine")
            strongly = bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            if "INT8" in config.flags:
                layer_type = "Int8"
            elif "FP16" in config.flags or (strongly and network.fp16_onnx):
                layer_type = "Half"
            else:
                layer_type = "Float"
            desc = {"profile": rec.profiles[-1], "layer_type": rec.force_layer_type or layer_type}
            return b"FAKEENGINE" + json.dumps(desc).encode()

    class Inspector:
        def __init__(self, engine):
            self.engine, self.execution_context = engine, None

        def get_engine_information(self, fmt):
            lt = self.engine.desc["layer_type"]
            ready = self.execution_context is not None and self.execution_context.shapes
            fmt_text = f"Row major linear {lt}" if ready else "N/A due to dynamic shapes"
            layers = [
                {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
                 "Inputs": [{"Name": "image", "Format/Datatype": "Row major linear FP32"}],
                 "Outputs": [{"Name": "r", "Format/Datatype": fmt_text}]},
                {"Name": "conv1", "LayerType": "CaskConvolution",
                 "Inputs": [{"Name": "r", "Format/Datatype": fmt_text}],
                 "Outputs": [{"Name": "c", "Format/Datatype": fmt_text}]},
                {"Name": "fc", "LayerType": "CaskGemmMatrixMultiply",
                 "Inputs": [{"Name": "c", "Format/Datatype": fmt_text}],
                 "Outputs": [{"Name": "logits", "Format/Datatype": fmt_text}]},
            ]
            return json.dumps({"Layers": layers + rec.extra_layers, "Bindings": ["image", "mask", "logits"]})

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            lo, _opt, hi = self.engine.desc["profile"][name]
            shape = tuple(shape)
            if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                return False
            self.shapes[name] = shape
            rec.context_shapes.append((name, shape))
            return True

        def get_tensor_shape(self, name):
            if name == "logits":
                n = self.shapes.get("image", (-1,))[0]
                return (n, 5)
            return self.shapes.get(name, (-1,) + tuple(self.engine.desc["profile"][name][0][1:]))

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            api = cuda
            shapes = dict(self.shapes)
            addr = dict(self.addresses)

            def kernel():  # logits[n, k] = (k + 1) * sum(image * mask)[n]
                n = shapes["image"][0]
                count = int(np.prod(shapes["image"]))
                img = api.device[addr["image"]][: count * 4].view(np.float32).reshape(shapes["image"])
                msk = api.device[addr["mask"]][: count * 4].view(np.float32).reshape(shapes["mask"])
                s = (img * msk).reshape(n, -1).sum(axis=1, dtype=np.float32)
                out = (s[:, None] * np.arange(1, 6, dtype=np.float32)[None, :]).astype(np.float32)
                api.device[addr["logits"]][: out.nbytes] = out.reshape(-1).view(np.uint8)
            api.kernel(kernel)
            return True

    class Engine:
        def __init__(self, desc):
            self.desc = desc
            self.names = ["image", "mask", "logits"]

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.OUTPUT if name == "logits" else trt.TensorIOMode.INPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_profile_shape(self, name, idx):
            return self.desc["profile"][name]

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(b"FAKEENGINE"):
                return None
            desc = json.loads(data[len(b"FAKEENGINE"):])
            desc["profile"] = {k: tuple(tuple(s) for s in v) for k, v in desc["profile"].items()}
            return Engine(desc)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt
