"""mt.save / mt.load: state dicts as .npz or .safetensors files (by the file's suffix), written
atomically, read with every byte checked."""

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import secrets
import stat
import struct
import zipfile
import zlib

from minitl import backend
from minitl.tensors import Tensor

_MARK = "__minitl_format__"  # a key that tells our files from any other .npz, holding the format
FORMAT = 1


def save(state_dict, path):
    """Write a dict of name -> array (a minitl Tensor, or another library's tensor such as a
    PyTorch state dict's) to `path` (host arrays, any device): a
    `.safetensors` file when the name ends so (what PyTorch and model hubs exchange; a sha256 of
    each tensor goes in its metadata), else `.npz`.

    The file is written next to its destination under a temporary name (".name.XXXX.partial",
    never mistaken for a checkpoint) and then renamed, so a crash mid-write leaves the old file
    (or none), never half a file (see atomic_write for permissions and links).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"save: expected a dict of name -> array, got {type(state_dict).__name__}")
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not name or name == _MARK or "/" in name or not name.isprintable():
            raise ValueError(f"save: keys must be non-empty printable strings without '/', other than {_MARK!r}; "
                             f"got {name!r}")
        value = value.data if isinstance(value, Tensor) else value
        try:
            value = backend.array_of(value)  # another library's tensor (a PyTorch state dict's values)
        except TypeError as e:
            raise TypeError(f"save: {name!r} is {e}") from None
        if not backend.is_array(value):
            raise TypeError(f"save: {name!r} is a {type(value).__name__}; only arrays and tensors can be saved")
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            raise TypeError(f"save: {name!r} holds {value.dtype} data; only arrays of numbers can be saved")
        arrays[name] = backend.to_host(value)
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"save: {path!r} is {'a folder' if path else 'empty'}: give the name of a file to write")
    if path.endswith(".safetensors"):
        with atomic_write(path) as f:
            f.write(_safetensors_bytes(arrays))
        return
    arrays[_MARK] = backend.numpy_host.asarray(FORMAT)
    with atomic_write(path) as f:
        write_npz(f, arrays)


# ---------------------------------------------------------------- safetensors
#
# The format (github.com/huggingface/safetensors): 8 bytes of header length (little-endian), a
# JSON header {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
# "__metadata__": {str: str}}, then every tensor's bytes (little-endian, C order), back to back.
# minitl writes it and reads it itself (no dependency: a header and raw bytes), checking every
# offset before reading any, and keeps a sha256 of each tensor in the metadata, verified on load.

_SAFETENSORS_DTYPES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
                       "I32": "<i4", "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8"}
_CHECKSUMS = "minitl_sha256"  # the metadata key: JSON {name: sha256 of the tensor's name, dtype, shape and bytes}
_MINITL = "minitl_format"  # present with the checksums in every file minitl writes: one without the other is damage


def _tensor_sum(name, entry, raw):
    """What a tensor's checksum covers: its name, dtype, shape and bytes (a flipped "F32" -> "I32" is damage too)."""
    h = hashlib.sha256(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
    h.update(raw)
    return h.hexdigest()


def _safetensors_bytes(arrays):
    np = backend.numpy_host
    codes = {np.dtype(v).newbyteorder("<") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in _SAFETENSORS_DTYPES.items()}
    header, chunks, offset, sums = {}, [], 0, {}
    for name, a in arrays.items():
        if name == "__metadata__":
            raise ValueError("save: '__metadata__' is the one key a .safetensors file cannot hold")
        little = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
        if little not in codes:
            raise TypeError(f"save: {name!r} holds {a.dtype} data, which .safetensors does not store")
        raw = np.ascontiguousarray(a, dtype=little).tobytes()
        header[name] = {"dtype": codes[little], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
        sums[name] = _tensor_sum(name, header[name], raw)
    header["__metadata__"] = {"format": "np", _MINITL: str(FORMAT), _CHECKSUMS: json.dumps(sums, sort_keys=True)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _read_safetensors(path):
    """name -> host array of a .safetensors file, or a ValueError saying what is wrong with it."""
    np = backend.numpy_host
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("it is shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"its header claims {n} bytes, more than the file holds")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # (RecursionError: nested 10**5 deep)
        raise ValueError(f"its header is not JSON ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"its metadata is a {type(metadata).__name__}, not an object of strings")
    data, spans = memoryview(raw)[8 + n:], []
    for name, entry in header.items():
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
            shape, (begin, end) = list(entry["shape"]), entry["data_offsets"]
            if not all(type(x) is int and x >= 0 for x in (*shape, begin, end)):  # (JSON's true is no size)
                raise ValueError
        except KeyError as e:
            raise ValueError(f"tensor {name!r}: unknown or missing {e} (minitl reads "
                             f"{', '.join(_SAFETENSORS_DTYPES)})") from None
        except (TypeError, ValueError):
            raise ValueError(f"tensor {name!r} has a damaged entry: {entry!r}") from None
        expected = dtype.itemsize * math.prod(shape)  # Python integers: a crafted shape cannot overflow
        if not begin <= end <= len(data) or end - begin != expected:
            raise ValueError(f"tensor {name!r}: {entry['dtype']} of shape {tuple(shape)} needs {expected} bytes, "
                             f"but its offsets are {begin} to {end} in {len(data)} bytes of data")
        spans.append((begin, end, name, dtype, shape, entry))
    spans.sort(key=lambda span: span[:2])
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError("two tensors' bytes overlap")
    ends = [0] + [span[1] for span in spans]  # the format's rule: the tensors fill the data, with no gap
    if any(span[0] != end for span, end in zip(spans, ends)) or ends[-1] != len(data):
        raise ValueError(f"its tensors do not fill its {len(data)} bytes of data back to back (a gap, or bytes "
                         f"left over)")
    if (_CHECKSUMS in metadata) != (_MINITL in metadata):
        raise ValueError(f"its metadata has one of {_MINITL!r} and {_CHECKSUMS!r} but not the other (a damaged key)")
    sums = {}
    if _CHECKSUMS in metadata:
        try:
            sums = json.loads(metadata[_CHECKSUMS])
        except (TypeError, json.JSONDecodeError):
            raise ValueError("its checksums (metadata) are damaged") from None
        if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
            raise ValueError("its checksums (metadata) are damaged")
    arrays = {}
    for begin, end, name, dtype, shape, entry in spans:
        chunk = data[begin:end]
        if name in sums and _tensor_sum(name, entry, chunk) != sums[name]:
            raise ValueError(f"tensor {name!r} does not match its checksum (the file was changed or damaged)")
        arrays[name] = np.frombuffer(chunk, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if sums and set(sums) != set(arrays):
        raise ValueError(f"its checksums name other tensors than it holds ({sorted(set(sums) ^ set(arrays))})")
    return arrays


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write to a new file at `path` all at once: the data goes to a unique temporary file beside
    it, which is renamed over `path` only when the block ends without error. A crash leaves the
    old file (or none); an error removes the temporary file. A new file gets the permissions
    open() would give it (0666 less the umask), a file written again keeps its own if its owner
    could read it (an unreadable one gets a new file's); a file marked read-only (its owner may
    read but not write it) is never replaced, whoever writes (root's open() would); a symbolic
    link is followed; and two writers never share a temporary name."""
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"{path!r} is {'a folder' if path else 'empty'}: give the name of a file to write")
    path = os.path.realpath(path)  # a symbolic link keeps pointing at the file it names
    folder = os.path.dirname(path)
    mode_now = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0
    if mode_now & stat.S_IRUSR and not mode_now & stat.S_IWUSR:  # open(path, "w") would refuse it too
        raise PermissionError(errno.EACCES, f"{path} is read-only (mode {mode_now:04o}): minitl does not replace "
                                            f"it; make it writable (chmod u+w) or write to another name")
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:  # name the file the caller asked for, not the temporary one
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror} (in {folder})") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        old_mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0
        if old_mode & stat.S_IRUSR:  # a file written again keeps its permissions, unless its owner could not read it
            os.chmod(tmp, old_mode)  # (a cache no one can read, copied, would be recomputed on every call)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path, foreign=False):
    """Read a file written by save() into a dict of name -> NumPy array.

    Every member is read whole and checked (CRC, header, size); a damaged or foreign file
    raises ValueError naming the file and what is wrong with it. `foreign=True` also reads a
    plain `np.savez` file of arrays (uncompressed; nothing is unpickled either way).

    A `.safetensors` file (from minitl, PyTorch or a model hub) is read by its header: every
    tensor's dtype, shape and offsets are checked against the file before any is read, and
    the sha256 minitl keeps in the metadata is verified. A file another program wrote has no
    such checksums: a changed byte inside a tensor then loads unnoticed (its size still fits).
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"load: {path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):  # a named pipe or a device would block, or never end
        raise ValueError(f"load: {path} is not a regular file")
    if path.endswith(".safetensors"):
        try:
            return _read_safetensors(path)
        except (ValueError, TypeError) as e:  # (a header can be damaged in ways no check above foresaw)
            raise ValueError(f"load: {path} is not a readable .safetensors file: {e}") from None
        except OSError as e:
            raise ValueError(f"load: {path} cannot be read: {e}") from None
    try:
        arrays = read_npz(path)
    except ValueError as e:
        raise ValueError(f"load: {path} is not a readable minitl checkpoint: {e}") from None
    except OSError as e:
        raise ValueError(f"load: {path} cannot be read: {e}") from None
    mark = arrays.pop(_MARK, None)
    if mark is None and foreign:
        return arrays
    if mark is None:
        raise ValueError(f"load: {path} is an .npz but was not written by minitl.save (load(path, foreign=True) "
                         f"reads a plain np.savez file of arrays)")
    if mark.shape != () or mark.dtype.kind not in "iu" or int(mark) != FORMAT:
        raise ValueError(f"load: {path} says it is minitl file format {mark.tolist()!r}; this minitl reads "
                         f"format {FORMAT}")
    return arrays


# ---------------------------------------------------------------- .npz, read with every byte checked

np = backend.numpy_host  # host files: NumPy itself, whatever the device
_NPY_VERSIONS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def write_npz(file, arrays):
    """Write name -> host array to a path or an open binary file as an uncompressed .npz: one `name.npy`
    member per array, written directly (any name is fine), never pickled."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, a in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(a), allow_pickle=False)


def read_npz(path):
    """Every array of an .npz, each member read whole and checked: its CRC, its header, and its
    length against the header's shape and dtype before an array is made. Members must be stored
    uncompressed (so no member unpacks to more than the file holds) and named once. A damaged
    file raises ValueError naming the member and what is wrong; nothing is unpickled."""
    arrays = {}
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ValueError(f"not an .npz archive ({e})") from None
    with archive:
        _check_members_apart(archive.infolist(), os.path.getsize(path))
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not an array (.npy)")
            if info.filename[:-4] in arrays:
                raise ValueError(f"member {info.filename!r} appears twice")
            if info.compress_type != zipfile.ZIP_STORED:  # its size on disk would not bound what it unpacks to
                raise ValueError(f"member {info.filename!r} is compressed; minitl writes and reads uncompressed files")
            try:
                raw = archive.read(info)  # to its end: zipfile checks the member's CRC there
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                raise ValueError(f"member {info.filename!r} is damaged ({e})") from None
            arrays[info.filename[:-4]] = _parse_npy(raw, info.filename)
    return arrays


def _check_members_apart(members, size):
    """Members must lie one after another inside the file. A crafted zip can nest them (one member's
    data holds the next member whole) or point past the end; reading every member would then hold
    many times the file in memory before anything is refused. Checked before any member is read."""
    end = 0
    for info in sorted(members, key=lambda info: info.header_offset):
        if info.header_offset < end:
            raise ValueError(f"member {info.filename!r} starts inside the member before it (overlapping members)")
        name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        end = info.header_offset + 30 + len(name) + info.compress_size  # 30: a local header's fixed part
        if end > size:
            raise ValueError(f"member {info.filename!r} ends at byte {end}, past the end of the file ({size} bytes)")


def _parse_npy(raw, name):
    """One .npy member's bytes as an array, or a ValueError saying what is wrong with them."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        shape, fortran_order, dtype = _NPY_VERSIONS[version](f)
    except KeyError:
        raise ValueError(f"member {name!r}: unsupported .npy version {version}") from None
    except Exception as e:  # a damaged header fails in many ways (a bad literal, a bad dtype, ...)
        raise ValueError(f"member {name!r} has a damaged header ({type(e).__name__}: {e})") from None
    if dtype.hasobject or dtype.kind not in "biufc":
        raise ValueError(f"member {name!r} holds {dtype} data: only numbers are read (nothing is unpickled)")
    if not all(type(d) is int and d >= 0 for d in shape):  # (NumPy's header parser lets (True,) through)
        raise ValueError(f"member {name!r} has a damaged header: shape {shape!r}")
    count = math.prod(shape)
    expected, found = count * dtype.itemsize, len(raw) - f.tell()
    if expected != found:
        raise ValueError(f"member {name!r}: its header says {dtype} of shape {shape} ({expected} bytes) but it holds "
                         f"{found} bytes of data")
    a = np.frombuffer(raw, dtype=dtype, count=count, offset=f.tell())
    a = a.reshape(shape, order="F" if fortran_order else "C")
    return a.astype(dtype.newbyteorder("="))  # a copy, in this machine's byte order (CuPy ignores any other)
