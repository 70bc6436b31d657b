# Minimal GGUF v3 writer (numpy only) for the tiny reference models made by
# make_reference.py; supports the metadata value types and F32/F16 tensors they need.
#
# File layout (GGUF v3, little-endian):
#   magic "GGUF" | u32 version=3 | u64 n_tensors | u64 n_kv
#   n_kv x (string key, u32 value_type, value)
#   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
#   zero padding to `alignment`, then the tensor data; each tensor's offset is
#   relative to the start of the data section and a multiple of `alignment`.
# A string is u64 length + UTF-8 bytes (no terminator). An array is
# u32 element type + u64 count + the elements.
#
# ggml lists dimensions fastest-varying first, the reverse of numpy/PyTorch:
# a row-major numpy array of shape [out, in] is written with ne = [in, out]
# and its bytes unchanged.

import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

# Metadata value types (gguf_type in the GGUF spec).
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, \
    T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(13)

# Tensor element types (ggml_type); only the two this tool writes.
GGML_F32 = 0
GGML_F16 = 1

_SCALAR_FMT = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h",
    T_UINT32: "<I", T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?",
    T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d",
}


def _pack_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_value(vtype, value):
    if vtype == T_STRING:
        return _pack_string(value)
    return struct.pack(_SCALAR_FMT[vtype], value)


class GGUFWriter:
    """Collects metadata and tensors, then writes the whole file at once."""

    def __init__(self, arch, alignment=DEFAULT_ALIGNMENT):
        self.arch = arch
        self.alignment = alignment
        self.kv = []        # (key, packed bytes of type + value)
        self.tensors = []   # (name, ne list, ggml type, raw bytes)
        self.add_string("general.architecture", arch)

    # -- metadata ---------------------------------------------------------
    def _add(self, key, vtype, value):
        if any(k == key for k, _ in self.kv):
            raise ValueError(f"duplicate metadata key {key!r}")
        self.kv.append((key, struct.pack("<I", vtype) + _pack_value(vtype, value)))

    def add_uint32(self, key, v): self._add(key, T_UINT32, int(v))
    def add_int32(self, key, v): self._add(key, T_INT32, int(v))
    def add_float32(self, key, v): self._add(key, T_FLOAT32, float(v))
    def add_bool(self, key, v): self._add(key, T_BOOL, bool(v))
    def add_string(self, key, v): self._add(key, T_STRING, str(v))

    def add_array(self, key, elem_type, values):
        if any(k == key for k, _ in self.kv):
            raise ValueError(f"duplicate metadata key {key!r}")
        parts = [struct.pack("<IIQ", T_ARRAY, elem_type, len(values))]
        parts += [_pack_value(elem_type, v) for v in values]
        self.kv.append((key, b"".join(parts)))

    # -- tensors ----------------------------------------------------------
    def add_tensor(self, name, array, ggml_type=GGML_F32):
        """array: numpy array in PyTorch/numpy (row-major) shape order."""
        if any(n == name for n, *_ in self.tensors):
            raise ValueError(f"duplicate tensor {name!r}")
        if ggml_type == GGML_F32:
            data = np.ascontiguousarray(array, dtype="<f4")
        elif ggml_type == GGML_F16:
            data = np.ascontiguousarray(array, dtype="<f2")
        else:
            raise ValueError(f"unsupported ggml type {ggml_type}")
        ne = list(reversed(data.shape))  # ggml order: fastest-varying first
        self.tensors.append((name, ne, ggml_type, data.tobytes()))

    # -- output -----------------------------------------------------------
    def _pad(self, n):
        return (-n) % self.alignment

    def write(self, path):
        head = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))]
        for key, packed in self.kv:
            head.append(_pack_string(key))
            head.append(packed)
        offset = 0
        for name, ne, gtype, data in self.tensors:
            head.append(_pack_string(name))
            head.append(struct.pack("<I", len(ne)))
            head.append(struct.pack(f"<{len(ne)}Q", *ne))
            head.append(struct.pack("<IQ", gtype, offset))
            offset += len(data) + self._pad(len(data))
        header = b"".join(head)
        with open(path, "wb") as f:
            f.write(header)
            f.write(b"\0" * self._pad(len(header)))
            for _, _, _, data in self.tensors:
                f.write(data)
                f.write(b"\0" * self._pad(len(data)))
