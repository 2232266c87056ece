"""Conversions between TF Serving's JSON, numpy arrays and `TensorProto`s.

JSON follows TF Serving's REST API (tensorflow_serving/util/json_tensor.cc):
values are converted to the dtype the signature declares, and a value of the
wrong JSON type is an INVALID_ARGUMENT ("... is not of expected type: float");
`{"b64": "..."}` is a binary string anywhere a string goes; outputs whose name
ends in `_bytes` are written back as `{"b64": ...}`, other strings as UTF-8 text.

String tensors are numpy object arrays of `bytes` throughout.
"""

import base64
import binascii
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

from seqapp.serving.errors import ServingError
from seqapp.serving.errors import invalid_argument

MAX_RANK = 32
# A TensorProto may carry fewer values than its shape and be filled with the last
# one (TF's rule); cap what such a fill may allocate.
MAX_FILLED_ELEMENTS = 1 << 24

_FLOAT_TYPES = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16}
_INT_TYPES = {types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
              types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64}


# DataType.values() builds a new list at each call; requests ask for names often.
_DTYPE_VALUES = frozenset(types_pb2.DataType.values())


def dtype_name(dtype_enum):
    """TF's name of a DataType enum as TF Serving prints it ("float", "string", "int64")."""
    if dtype_enum in _DTYPE_VALUES:
        return types_pb2.DataType.Name(dtype_enum)[3:].lower()
    return str(dtype_enum)


def numpy_dtype(dtype_enum):
    """The numpy dtype for a DataType enum (object for strings)."""
    if dtype_enum == types_pb2.DT_STRING:
        return np.dtype(object)
    try:
        return np.dtype(tf.dtypes.as_dtype(dtype_enum).as_numpy_dtype)
    except (TypeError, ValueError):
        raise invalid_argument(f"unsupported dtype {dtype_name(dtype_enum)}") from None


def dtype_enum_of(array):
    """The DataType enum of a numpy array (object arrays are DT_STRING)."""
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    try:
        return tf.dtypes.as_dtype(array.dtype).as_datatype_enum
    except TypeError:
        raise invalid_argument(f"unsupported numpy dtype {array.dtype}") from None


def as_string_array(values):
    """Any array-like of str/bytes as an object array of UTF-8 `bytes`."""
    array = np.asarray(values, dtype=object)
    flat = []
    for value in array.ravel():
        if isinstance(value, str):
            flat.append(utf8(value))
        elif isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
            flat.append(bytes(value))
        else:
            raise invalid_argument(f"Expected str or bytes in a string tensor, got {type(value).__name__}")
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


# ---------------------------------------------------------------- names / shapes

def check_input_names(sent, expected):
    """TF Serving's error for missing or extra input names (predict_util.cc)."""
    sent, expected = set(sent), set(expected)
    if sent != expected:
        def fmt(names):
            return "{" + ",".join(sorted(names)) + "}"

        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} len({fmt(sent)}) != "
            f"len({fmt(expected)}). Sent extra: {fmt(sent - expected)}. Missing but required: "
            f"{fmt(expected - sent)}.")


def shape_of_info(tensor_info):
    """A TensorInfo's shape as a list (None for unknown dims), or None for unknown rank."""
    shape = tensor_info.tensor_shape
    if shape.unknown_rank:
        return None
    return [d.size if d.size >= 0 else None for d in shape.dim]


# ---------------------------------------------------------------- JSON -> numpy

def _json_type(value):
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def decode_b64(value):
    encoded = value["b64"]
    if not isinstance(encoded, str):
        raise invalid_argument(f"'b64' value must be a string, not {_json_type(encoded)}")
    try:
        return base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        # TF Serving also accepts web-safe base64.
        try:
            return base64.b64decode(encoded.encode("ascii"), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise invalid_argument(f"Unable to base64 decode: {_short(encoded)}") from None


def utf8(text):
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(f"String is not valid UTF-8 (unpaired surrogate): {_short(text)}") from None


def _leaf_converter(dtype_enum):
    name = dtype_name(dtype_enum)

    def wrong(value):
        return invalid_argument(
            f"JSON Value: {_short(value)} Type: {_json_type(value)} is not of expected type: {name}")

    if dtype_enum == types_pb2.DT_STRING:
        def convert(value):
            if isinstance(value, str):
                return utf8(value)
            if is_b64(value):
                return decode_b64(value)
            raise wrong(value)
    elif dtype_enum in _FLOAT_TYPES:
        def convert(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong(value)
            try:
                return float(value)
            except OverflowError:
                raise wrong(value) from None
    elif dtype_enum in _INT_TYPES:
        info = np.iinfo(numpy_dtype(dtype_enum))

        def convert(value):
            if isinstance(value, bool) or not isinstance(value, int) or not info.min <= value <= info.max:
                raise wrong(value)
            return value
    elif dtype_enum == types_pb2.DT_BOOL:
        def convert(value):
            if not isinstance(value, bool):
                raise wrong(value)
            return value
    else:
        def convert(value):
            raise invalid_argument(f"Conversion of JSON values to {name} tensors is not supported")
    return convert


def json_to_array(value, dtype_enum):
    """A JSON value (scalar or nested lists) as an array of `dtype_enum`.

    Raises:
        ServingError: INVALID_ARGUMENT for ragged lists, wrong JSON types, rank > 32.
    """
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > MAX_RANK:
            raise invalid_argument(f"Tensors of rank above {MAX_RANK} are not supported")
        if not probe:
            break
        probe = probe[0]
    convert = _leaf_converter(dtype_enum)
    flat = []

    def walk(node, depth):
        if depth == len(shape):
            if isinstance(node, list):
                raise invalid_argument("Expecting tensors in the list to be of same shape (ragged list)")
            flat.append(convert(node))
            return
        if not isinstance(node, list) or len(node) != shape[depth]:
            raise invalid_argument("Expecting tensors in the list to be of same shape (ragged list)")
        for item in node:
            walk(item, depth + 1)

    walk(value, 0)
    np_dtype = numpy_dtype(dtype_enum)
    if np_dtype == object:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        with np.errstate(all="ignore"):
            array = np.array(flat, dtype=np.float64 if dtype_enum in _FLOAT_TYPES else np_dtype)
            array = array.astype(np_dtype)
    return array.reshape(shape)


def instances_to_arrays(instances, input_infos):
    """Row format (`"instances"`) → `{input_name: array}` batched along a new dim 0."""
    if not isinstance(instances, list):
        raise invalid_argument("Expecting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("Expecting 'instances' to be a non-empty list/array")
    named = isinstance(instances[0], dict) and not is_b64(instances[0])
    if named:
        keys = set(instances[0])
        columns = {key: [] for key in keys}
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict) or is_b64(instance) or set(instance) != keys:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object with keys "
                    f"{sorted(keys)} expected (every instance names the same inputs)")
            for key, value in instance.items():
                columns[key].append(value)
    else:
        if len(input_infos) != 1:
            raise invalid_argument(
                f"The signature has {len(input_infos)} inputs ({sorted(input_infos)}): each of 'instances' must "
                "be a JSON object naming them")
        columns = {next(iter(input_infos)): instances}
    check_input_names(columns, input_infos)
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = json_to_array(values, input_infos[name].dtype)
        except ServingError as error:
            raise invalid_argument(f"Failed to process 'instances' for input '{name}': {error}") from None
    return arrays


def columns_to_arrays(inputs, input_infos):
    """Columnar format (`"inputs"`) → `{input_name: array}`."""
    if isinstance(inputs, dict) and not is_b64(inputs):
        columns = inputs
    else:
        if len(input_infos) != 1:
            raise invalid_argument(
                f"The signature has {len(input_infos)} inputs ({sorted(input_infos)}): 'inputs' must be a JSON "
                "object naming them")
        columns = {next(iter(input_infos)): inputs}
    check_input_names(columns, input_infos)
    arrays = {}
    for name, value in columns.items():
        try:
            arrays[name] = json_to_array(value, input_infos[name].dtype)
        except ServingError as error:
            raise invalid_argument(f"Failed to process 'inputs' for input '{name}': {error}") from None
    return arrays


def json_to_example(features, where="example"):
    """`{"feature": value or [values]}` → `tf.train.Example` (JSON ints → int64_list,
    numbers → float_list, strings and b64 → bytes_list), as TF Serving builds them."""
    from tensorflow.core.example import example_pb2

    if not isinstance(features, dict):
        raise invalid_argument(f"Expecting {where} to be a JSON object, got {_json_type(features)}")
    example = example_pb2.Example()
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[key]
        if not values:
            continue
        if all(isinstance(v, str) or is_b64(v) for v in values):
            feature.bytes_list.value.extend(utf8(v) if isinstance(v, str) else decode_b64(v) for v in values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            if not all(-(2 ** 63) <= v < 2 ** 63 for v in values):
                raise invalid_argument(f"Feature '{key}' of {where}: integer out of int64 range")
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            try:
                feature.float_list.value.extend(float(v) for v in values)
            except OverflowError:
                raise invalid_argument(f"Feature '{key}' of {where}: number out of range") from None
        else:
            raise invalid_argument(
                f"Feature '{key}' of {where}: values must all be strings ({{\"b64\": ...}} for binary) or all "
                f"numbers, got {_short(value)}")
    return example


# ---------------------------------------------------------------- numpy -> JSON

def _floats_to_json(array):
    if array.dtype == np.float64:
        return array.tolist()
    # Shortest decimal form of the float32 (or narrower) value, as TF Serving writes it.
    as32 = array.astype(np.float32)
    return np.array([float(text) for text in as32.ravel().astype(str)], dtype=np.float64).reshape(array.shape).tolist()


def _map_nested(value, fn):
    if isinstance(value, list):
        return [_map_nested(item, fn) for item in value]
    return fn(value)


def _string_to_json(value, force_b64):
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not force_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text: send it losslessly
    return {"b64": base64.b64encode(value).decode("ascii")}


def array_to_json(array, name=""):
    """An output tensor as JSON-ready nested lists."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        force_b64 = name.endswith("_bytes")
        return _map_nested(array.tolist(), lambda v: _string_to_json(v, force_b64))
    if array.dtype.kind == "f" or array.dtype == tf.bfloat16.as_numpy_dtype:
        return _floats_to_json(array)
    if array.dtype.kind in "iub":
        return array.tolist()
    raise invalid_argument(f"Output '{name}' of dtype {array.dtype} cannot be written as JSON")


def outputs_to_rows(outputs):
    """Row format: `{"predictions": [...]}`, one entry per batch element."""
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        if np.ndim(array) == 0:
            raise invalid_argument(f"Tensor name: {name} is a scalar; row format needs a batch dimension "
                                   "(send 'inputs' for columnar output)")
        return array_to_json(array, name)
    batch = None
    for name, array in outputs.items():
        if np.ndim(array) == 0:
            raise invalid_argument(f"Tensor name: {name} is a scalar; row format needs a batch dimension")
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                                   f"expecting: {batch}")
    columns = {name: array_to_json(array, name) for name, array in outputs.items()}
    return [{name: columns[name][i] for name in outputs} for i in range(batch)]


def outputs_to_columns(outputs):
    """Columnar format: `{"outputs": value}` for one output, else `{"outputs": {name: value}}`."""
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return array_to_json(array, name)
    return {name: array_to_json(array, name) for name, array in outputs.items()}


def float32_to_json(value):
    """One float32 value in its shortest decimal form."""
    return float(str(np.float32(value)))


# ---------------------------------------------------------------- TensorProto <-> numpy

def array_to_proto(array, dtype_enum=None):
    """A numpy array as a `TensorProto` with typed value fields (`float_val`, ...), as
    TF Serving writes responses (`Tensor::AsProtoField`)."""
    array = np.asarray(array)
    if dtype_enum is None:
        dtype_enum = dtype_enum_of(array)
    proto = tensor_pb2.TensorProto(dtype=dtype_enum)
    proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape]))
    flat = array.ravel()
    if dtype_enum == types_pb2.DT_STRING:
        proto.string_val.extend(as_string_array(flat).tolist())
    elif dtype_enum == types_pb2.DT_FLOAT:
        proto.float_val.extend(flat.astype(np.float32).tolist())
    elif dtype_enum == types_pb2.DT_DOUBLE:
        proto.double_val.extend(flat.astype(np.float64).tolist())
    elif dtype_enum in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        np_dtype = numpy_dtype(dtype_enum)
        proto.half_val.extend(flat.astype(np_dtype).view(np.uint16).tolist())
    elif dtype_enum in (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8,
                        types_pb2.DT_UINT16):
        proto.int_val.extend(flat.astype(np.int64).tolist())
    elif dtype_enum == types_pb2.DT_INT64:
        proto.int64_val.extend(flat.astype(np.int64).tolist())
    elif dtype_enum == types_pb2.DT_UINT32:
        proto.uint32_val.extend(flat.astype(np.uint32).tolist())
    elif dtype_enum == types_pb2.DT_UINT64:
        proto.uint64_val.extend(flat.astype(np.uint64).tolist())
    elif dtype_enum == types_pb2.DT_BOOL:
        proto.bool_val.extend(flat.astype(bool).tolist())
    else:
        raise invalid_argument(f"cannot write a {dtype_name(dtype_enum)} tensor")
    return proto


def proto_to_array(proto, name="tensor"):
    """A `TensorProto` as a numpy array (INVALID_ARGUMENT when malformed)."""
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"tensor parsing error: {name}: shape has unknown rank")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims) or len(dims) > MAX_RANK:
        raise invalid_argument(f"tensor parsing error: {name}: invalid shape {dims}")
    count = math.prod(dims)
    given = max(len(proto.tensor_content), len(proto.string_val), len(proto.float_val), len(proto.double_val),
                len(proto.int_val), len(proto.int64_val), len(proto.half_val), len(proto.bool_val),
                len(proto.uint32_val), len(proto.uint64_val))
    if count > MAX_FILLED_ELEMENTS and count > given:
        raise invalid_argument(f"tensor parsing error: {name}: shape {dims} holds {count} elements but the "
                               "proto carries far fewer values")
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        if count and not values:
            values = [b""]
        if len(values) > count:
            raise invalid_argument(f"tensor parsing error: {name}: {len(values)} values for shape {dims}")
        values += [values[-1]] * (count - len(values)) if values else []
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(dims)
    try:
        numpy_dtype(proto.dtype)
        return tf.make_ndarray(proto)
    except ServingError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure is the client's
        raise invalid_argument(f"tensor parsing error: {name}: {error}") from None
