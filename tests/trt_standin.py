"""A stand-in for the parts of the TensorRT 10 Python API that hmdiff_ros uses, keeping the rules
of TensorRT that a CPU test can check:

- the ONNX parser reads each input's first-axis name (``dim_param``); inputs that share a name
  share one size (TensorRT's parser makes them one dimension);
- an optimisation profile must give every dynamic input a range, and inputs that share an axis
  name the same range on that axis, or the build fails (``build_serialized_network`` -> None);
- an execution context takes an input shape only inside the profile and, for an axis shared
  by name, only the size the other inputs of that name were given.

The engine "serialised" here is JSON of the inputs, their axis names and the profile; nothing
runs (``execute_async_v3`` is not provided)."""

from __future__ import annotations

import json
import types

import onnx


class _Dims(tuple):
    pass


def make(platform_has_fast_fp16: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0-standin"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    trt.builds = []  # what every build was asked for: (inputs, profile, flags)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Tensor:
        def __init__(self, name, shape, axis):
            self.name, self.shape, self.axis = name, _Dims(shape), axis

    class Network:
        def __init__(self):
            self.inputs, self.outputs = [], []

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
                self.network.inputs.append(Tensor(value.name, shape, dims[0].dim_param or None))
            self.network.outputs = [
                Tensor(
                    v.name,
                    [-1 if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim],
                    v.type.tensor_type.shape.dim[0].dim_param or None,
                )
                for v in graph.output
            ]
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
                    "profile": {n: [list(s) for s in r] for n, r in shapes.items()},
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

    class Engine:
        def __init__(self, record):
            self.record = record
            self.names = [n for n, _, _ in record["inputs"]] + [n for n, _ in record["outputs"]]
            self.axes = {n: a for n, _, a in record["inputs"]}
            self.shapes = {n: s for n, s, _ in record["inputs"]} | {n: s for n, s in record["outputs"]}
            self.profile = {n: [tuple(s) for s in r] for n, r in record["profile"].items()}

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
