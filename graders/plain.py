"""Plain data across the sandbox wall: JSON for structure, `.npz` for arrays, never pickle.

`dump(obj, folder, name)` writes `name.json` and `name.npz` (only when there are arrays);
`load(folder, name)` reads them back.
Plain data is None, bool, int, float (inf and nan included), str, bytes, lists, tuples, dicts with
str keys, numpy arrays and scalars of bool/int/uint/float/complex dtypes, and dense torch tensors
of any dtype (bfloat16 and float8 travel as raw bits with their dtype written down). Everything
else, and every subclass of those types, is refused with a `PlainDataError`.

`load` is the trust boundary: what it reads may have been written by a hostile submission, so it
opens files without following links, caps their size, checks every array header before numpy
allocates, parses JSON strictly, and rebuilds only the types above.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "ladder-plain/1"
MAX_DEPTH = 64  # containers nested deeper than this are refused
MAX_BYTES = 2**30  # default cap on each file `load` reads, and on the arrays it rebuilds
MAX_JSON_BYTES = 32 * 2**20  # structure beyond this would cost the trusted side GiBs of objects
ARRAY_KINDS = "biufc"  # bool, int, uint, float, complex
_RAW_INTS = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}  # raw-bit storage by item size
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class PlainDataError(ValueError):
    """The object is not plain data, or the files do not hold plain data."""


# ---------------------------------------------------------------------------------------- dump


def dump(obj: Any, folder: Path, name: str) -> None:
    """Write `obj` as `folder/name.json` (structure) and `folder/name.npz` (arrays)."""
    arrays: dict[str, np.ndarray] = {}
    tree = {"format": FORMAT, "root": _encode(obj, arrays, 0)}
    text = json.dumps(tree, allow_nan=False, separators=(",", ":"))
    folder = Path(folder)
    if arrays:  # no arrays, no .npz: `load` then expects none
        with open(folder / f"{name}.npz", "wb") as f:
            np.savez(f, **arrays)
    (folder / f"{name}.json").write_text(text, encoding="utf-8")


def to_device(obj: Any, device: str) -> Any:
    """Move every torch tensor in a nest of dicts, lists and tuples to `device`."""
    torch = sys.modules.get("torch")
    if torch is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _encode(obj: Any, arrays: dict[str, np.ndarray], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PlainDataError(f"containers nested more than {MAX_DEPTH} deep (a cycle?)")
    kind = type(obj)
    if obj is None or kind in (bool, int, str):
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else {"float": repr(obj)}
    if kind is bytes:
        return {"bytes": obj.hex()}
    if kind is list:
        return [_encode(x, arrays, depth + 1) for x in obj]
    if kind is tuple:
        return {"tuple": [_encode(x, arrays, depth + 1) for x in obj]}
    if kind is dict:
        bad = [k for k in obj if type(k) is not str]
        if bad:
            raise PlainDataError(f"dict keys must be str, not {type(bad[0]).__name__}")
        return {"dict": {k: _encode(v, arrays, depth + 1) for k, v in obj.items()}}
    if kind is np.ndarray or isinstance(obj, np.generic):
        return _encode_numpy(obj, arrays)
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(obj, torch.Tensor):
        return _encode_tensor(obj, arrays, torch)
    raise PlainDataError(f"{_type_name(obj)} is not plain data")


def _encode_numpy(obj: np.ndarray | np.generic, arrays: dict[str, np.ndarray]) -> dict:
    if type(obj) is not np.ndarray and type(obj).__module__ != "numpy":
        raise PlainDataError(f"{_type_name(obj)} is not plain data")
    arr = np.asarray(obj)
    if arr.dtype.kind not in ARRAY_KINDS or arr.dtype.fields is not None:
        raise PlainDataError(f"numpy arrays of dtype {arr.dtype} are not plain data")
    key = _store(arrays, arr)
    tag = "ndarray" if type(obj) is np.ndarray else "scalar"
    return {tag: key, "dtype": arr.dtype.str, "shape": list(arr.shape)}


def _encode_tensor(t: Any, arrays: dict[str, np.ndarray], torch: Any) -> dict:
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise PlainDataError(f"a tensor of subclass {_type_name(t)} is not plain data")
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise PlainDataError(f"only dense tensors are plain data, not {t.layout} on {t.device}")
    t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
    dtype = str(t.dtype).removeprefix("torch.")
    try:
        arr, raw = t.numpy(), None
    except (TypeError, RuntimeError):  # no numpy twin (bfloat16, float8, complex32): raw bits
        raw = _RAW_INTS[t.element_size()]
        arr = t.view(getattr(torch, raw)).numpy()
    node = {"tensor": _store(arrays, arr), "dtype": dtype, "shape": list(t.shape)}
    if raw is not None:
        node["raw"] = raw
    return node


def _store(arrays: dict[str, np.ndarray], arr: np.ndarray) -> str:
    key = f"a{len(arrays)}"
    arrays[key] = arr
    return key


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


# ---------------------------------------------------------------------------------------- load


def load(folder: Path, name: str, *, max_bytes: int = MAX_BYTES) -> Any:
    """Read what `dump` wrote to `folder/name.*`, trusting nothing in it."""
    folder = Path(folder)
    data = read_capped(folder / f"{name}.json", min(max_bytes, MAX_JSON_BYTES))
    try:
        tree = _parse_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PlainDataError(f"{name}.json is not UTF-8") from None
    if type(tree) is not dict or set(tree) != {"format", "root"} or tree["format"] != FORMAT:
        raise PlainDataError(f"{name}.json is not in the {FORMAT} format")
    npz = folder / f"{name}.npz"
    arrays = _read_arrays(npz, max_bytes) if os.path.lexists(npz) else {}
    return _Decoder(arrays).decode(tree["root"], 0)


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file, refusing links, fifos, devices and files over `max_bytes`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PlainDataError(f"{path.name} is missing") from None
    except OSError as err:  # ELOOP: a symbolic link
        raise PlainDataError(f"{path.name} cannot be opened safely: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PlainDataError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise PlainDataError(f"{path.name} is larger than {max_bytes} bytes")
        data = f.read(info.st_size + 1)  # never a buffer of max_bytes: that may be a GiB
        if len(data) > max_bytes:
            raise PlainDataError(f"{path.name} is larger than {max_bytes} bytes")
        return data


def _parse_json(text: str) -> Any:
    def no_constants(word: str) -> Any:
        raise PlainDataError(f"bare {word} in JSON")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise PlainDataError("a JSON object repeats a key")
        return out

    try:
        return json.loads(text, parse_constant=no_constants, object_pairs_hook=unique_keys)
    except RecursionError:
        raise PlainDataError("JSON nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, huge int literals
        if isinstance(err, PlainDataError):
            raise
        raise PlainDataError(f"malformed JSON: {err}") from None


def _read_arrays(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, after checking each header against the size caps."""
    import io

    data = io.BytesIO(read_capped(path, max_bytes))
    total = 0
    try:
        with zipfile.ZipFile(data) as zf:
            members = zf.infolist()
            if len(members) > 100_000:
                raise PlainDataError(f"{path.name} holds too many arrays")
            for info in members:
                total += _check_member(zf, info, max_bytes)
                if total > max_bytes:
                    raise PlainDataError(f"the arrays of {path.name} exceed {max_bytes} bytes")
        data.seek(0)
        with np.load(data, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except PlainDataError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError from numpy, ...
        raise PlainDataError(f"{path.name} is not a valid array file: {err}") from None


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> int:
    """The byte size the member's array declares, refusing unsafe dtypes and lying headers."""
    if not info.filename.endswith(".npy") or info.file_size > max_bytes:
        raise PlainDataError(f"unexpected array member {info.filename!r}")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise PlainDataError(f"array {info.filename!r} has format version {version}")
        read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
        shape, _, dtype = read_header(f)
    if dtype.kind not in ARRAY_KINDS or dtype.fields is not None or dtype.hasobject:
        raise PlainDataError(f"array {info.filename!r} has dtype {dtype}, which is not plain")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise PlainDataError(f"array {info.filename!r} declares more data than it holds")
    return nbytes


class _Decoder:
    """Rebuilds plain objects from a parsed JSON tree and its arrays, checking every node."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def decode(self, node: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise PlainDataError(f"containers nested more than {MAX_DEPTH} deep")
        if node is None or type(node) in (bool, int, str, float):
            return node
        if type(node) is list:
            return [self.decode(x, depth + 1) for x in node]
        if type(node) is not dict or not node:
            raise PlainDataError(f"unexpected JSON node {type(node).__name__}")
        tags = [key for key in node if key in _TAGS]
        if len(tags) != 1 or set(node) not in _TAGS[tags[0]]:
            raise PlainDataError(f"unexpected JSON object with keys {sorted(node)[:5]}")
        return getattr(self, f"_{tags[0]}")(node, depth)

    def _tuple(self, node: dict, depth: int) -> tuple:
        items = node["tuple"]
        if type(items) is not list:
            raise PlainDataError("a tuple node must hold a list")
        return tuple(self.decode(x, depth + 1) for x in items)

    def _dict(self, node: dict, depth: int) -> dict:
        items = node["dict"]
        if type(items) is not dict:
            raise PlainDataError("a dict node must hold an object")
        return {k: self.decode(v, depth + 1) for k, v in items.items()}

    def _bytes(self, node: dict, depth: int) -> bytes:
        try:
            return bytes.fromhex(node["bytes"])
        except (TypeError, ValueError):
            raise PlainDataError("a bytes node must hold hexadecimal digits") from None

    def _float(self, node: dict, depth: int) -> float:
        if node["float"] not in _NONFINITE:
            raise PlainDataError(f"unknown float {node['float']!r}")
        return _NONFINITE[node["float"]]

    def _array(self, key: Any, dtype: Any, shape: Any) -> np.ndarray:
        if type(key) is not str or key not in self.arrays or key in self.used:
            raise PlainDataError(f"array reference {key!r} is missing or used twice")
        self.used.add(key)
        arr = self.arrays[key]
        if type(shape) is not list or list(arr.shape) != shape or arr.dtype.str != dtype:
            raise PlainDataError(f"array {key} does not match its declared dtype and shape")
        return arr

    def _ndarray(self, node: dict, depth: int) -> np.ndarray:
        return self._array(node["ndarray"], node["dtype"], node["shape"])

    def _scalar(self, node: dict, depth: int) -> np.generic:
        arr = self._array(node["scalar"], node["dtype"], node["shape"])
        if arr.ndim:
            raise PlainDataError("a numpy scalar must have shape ()")
        return arr[()]

    def _tensor(self, node: dict, depth: int) -> Any:
        import torch

        dtype = getattr(torch, str(node["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise PlainDataError(f"unknown tensor dtype {node['dtype']!r}")
        raw = node.get("raw")
        storage = np.dtype(raw if raw in _RAW_INTS.values() else _torch_to_numpy(dtype)).str
        arr = self._array(node["tensor"], storage, node["shape"])
        if not arr.flags.writeable:
            arr = arr.copy()
        t = torch.from_numpy(arr)
        if raw is not None:
            if dtype.itemsize != arr.dtype.itemsize:
                raise PlainDataError(f"raw bits of {raw} cannot hold {dtype}")
            t = t.view(dtype)
        return t


def _torch_to_numpy(dtype: Any) -> np.dtype:
    import torch

    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except (TypeError, RuntimeError):
        raise PlainDataError(f"tensor dtype {dtype} must travel as raw bits") from None


# tag -> the key sets a node with that tag may have
_TAGS = {
    "tuple": [{"tuple"}],
    "dict": [{"dict"}],
    "float": [{"float"}],
    "bytes": [{"bytes"}],
    "ndarray": [{"ndarray", "dtype", "shape"}],
    "scalar": [{"scalar", "dtype", "shape"}],
    "tensor": [{"tensor", "dtype", "shape"}, {"tensor", "dtype", "shape", "raw"}],
}
