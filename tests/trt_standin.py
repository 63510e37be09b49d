"""A stand-in for the parts of the TensorRT 10 Python API that hmdiff_ros uses, keeping the rules
of TensorRT that a CPU test can check:

- the ONNX parser reads each input's first-axis name (``dim_param``); inputs that share a name
  share one size (TensorRT's parser makes them one dimension);
- an optimisation profile must give every dynamic input a range, and inputs that share an axis
  name the same range on that axis, or the build fails (``build_serialized_network`` -> None);
- an execution context takes an input shape only inside the profile and, for an axis shared
  by name, only the size the other inputs of that name were given;
- an engine runs on memory: ``execute_async_v3`` reads each input from the address bound to it
  (``set_tensor_address``) as the shape and dtype bound and the engine's, and writes each output
  to its address; an output's shape (``get_tensor_shape``) follows from the input shapes bound.

The engine "serialised" here is JSON of the inputs, their axis names and dtypes, the profile and
the ONNX graph it was built from, which runs with ONNX Runtime on the CPU (the addresses are
CPU memory: the runner's device set to the CPU). ``trt.executions`` lists every run as
``(first input's name, {input: shape})``."""

from __future__ import annotations

import base64
import ctypes
import json
import types

import numpy as np
import onnx

# ONNX element types -> (TensorRT DataType name, numpy dtype)
_DTYPES = {1: ("FLOAT", np.float32), 10: ("HALF", np.float16), 6: ("INT32", np.int32), 7: ("INT64", np.int64)}


def _memory(address: int, shape, dtype) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` at ``address`` (no copy: writes go to that memory)."""
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * size).from_address(address), dtype=dtype).reshape(shape)


class _Dims(tuple):
    pass


def make(platform_has_fast_fp16: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0-standin"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    trt.builds = []  # what every build was asked for: (inputs, profile, flags)
    trt.executions = []  # every engine run: (first input's name, {input: shape})

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Tensor:
        def __init__(self, name, shape, axis, dtype=1):
            self.name, self.shape, self.axis, self.dtype = name, _Dims(shape), axis, dtype

    class Network:
        def __init__(self):
            self.inputs, self.outputs, self.onnx = [], [], b""

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data: bytes) -> bool:
            try:
                graph = onnx.load_from_string(data).graph
            except Exception as exc:  # noqa: BLE001 - a parser reports, never raises
                self.errors.append(str(exc))
                return False
            weights = {w.name for w in graph.initializer}
            for value in graph.input:
                if value.name in weights:
                    continue
                dims = value.type.tensor_type.shape.dim
                shape = [-1 if d.dim_param else d.dim_value for d in dims]
                tensor = Tensor(value.name, shape, dims[0].dim_param or None, value.type.tensor_type.elem_type)
                self.network.inputs.append(tensor)
            self.network.outputs = [
                Tensor(
                    v.name,
                    [-1 if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim],
                    v.type.tensor_type.shape.dim[0].dim_param or None,
                    v.type.tensor_type.elem_type,
                )
                for v in graph.output
            ]
            self.network.onnx = data
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class TimingCache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.flags, self.profiles = set(), []

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            self.flags.add(flag)

        def create_timing_cache(self, data):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return TimingCache()

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        platform_has_fast_fp16 = None

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append(({t.name: t.axis for t in network.inputs}, config.profiles, set(config.flags)))
            if len(config.profiles) != 1:
                return None
            shapes = config.profiles[0].shapes
            by_axis = {}
            for t in network.inputs:
                if t.name not in shapes:  # a dynamic input without a range: TensorRT refuses to build
                    return None
                low, opt, high = shapes[t.name]
                if not low[0] <= opt[0] <= high[0] or len(low) != len(t.shape):
                    return None
                if t.axis is not None:
                    first = tuple(s[0] for s in shapes[t.name])
                    if by_axis.setdefault(t.axis, first) != first:  # one named dimension, two ranges
                        return None
            return json.dumps(
                {
                    "inputs": [[t.name, list(t.shape), t.axis] for t in network.inputs],
                    "outputs": [[t.name, list(t.shape)] for t in network.outputs],
                    "dtypes": {t.name: t.dtype for t in network.inputs + network.outputs},
                    "profile": {n: [list(s) for s in r] for n, r in shapes.items()},
                    "onnx": base64.b64encode(network.onnx).decode(),
                }
            ).encode()

    Builder.platform_has_fast_fp16 = platform_has_fast_fp16

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.profile[name]
            shape = tuple(shape)
            if len(shape) != len(low) or not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
                return False
            axis = self.engine.axes[name]
            for other, size in self.shapes.items():
                if other != name and axis is not None and self.engine.axes[other] == axis and size[0] != shape[0]:
                    return False  # the same named dimension cannot take two sizes
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def get_tensor_shape(self, name):
            if name in self.engine.axes:
                return _Dims(self.shapes[name])
            key = tuple(self.shapes.get(n) for n in self.engine.axes)
            if key not in self.engine.output_shapes:  # the outputs' shapes follow from the inputs bound
                self.engine.output_shapes[key] = {n: v.shape for n, v in self._run(self._zeros()).items()}
            return _Dims(self.engine.output_shapes[key][name])

        def _zeros(self):
            return {n: np.zeros(self.shapes[n], self.engine.numpy_dtype(n)) for n in self.engine.axes}

        def _run(self, inputs):
            missing = [n for n in self.engine.axes if n not in self.shapes]
            if missing:
                raise RuntimeError(f"stand-in TensorRT: inputs {missing} have no shape set")
            names = [n for n, _ in self.engine.record["outputs"]]
            return dict(zip(names, self.engine.session().run(names, inputs), strict=True))

        def execute_async_v3(self, stream_handle):
            if any(n not in self.addresses for n in self.engine.names):
                return False  # a tensor without memory: TensorRT fails the launch
            inputs = {
                n: _memory(self.addresses[n], self.shapes[n], self.engine.numpy_dtype(n)).copy()
                for n in self.engine.axes
            }
            trt.executions.append((next(iter(self.engine.axes)), {n: tuple(v.shape) for n, v in inputs.items()}))
            for name, value in self._run(inputs).items():
                _memory(self.addresses[name], value.shape, self.engine.numpy_dtype(name))[...] = value
            return True

    class Engine:
        def __init__(self, record):
            self.record = record
            self.names = [n for n, _, _ in record["inputs"]] + [n for n, _ in record["outputs"]]
            self.axes = {n: a for n, _, a in record["inputs"]}
            self.shapes = {n: s for n, s, _ in record["inputs"]} | {n: s for n, s in record["outputs"]}
            self.profile = {n: [tuple(s) for s in r] for n, r in record["profile"].items()}
            self.dtypes = record.get("dtypes", {})
            self._session, self.output_shapes = None, {}

        def session(self):
            if self._session is None:
                import onnxruntime

                graph = base64.b64decode(self.record["onnx"])
                self._session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
            return self._session

        def numpy_dtype(self, name):
            return _DTYPES[self.dtypes.get(name, 1)][1]

        def get_tensor_dtype(self, name):
            return types.SimpleNamespace(name=_DTYPES[self.dtypes.get(name, 1)][0])

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.axes else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return _Dims(self.shapes[name])

        def get_tensor_profile_shape(self, name, index):
            assert index == 0
            return [_Dims(s) for s in self.profile[name]]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(data))
            except ValueError:
                return None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt
