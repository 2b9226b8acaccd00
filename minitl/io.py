"""mt.save / mt.load: state dicts as .npz files, written atomically."""

import os
import tempfile
import zipfile

from minitl import backend
from minitl.autograd import Tensor

_MARK = "__minitl_format__"  # a key that tells our files from any other .npz


def save(state_dict, path):
    """Write a dict of name -> array (or Tensor) to `path` as .npz.

    The file is written next to its destination under a temporary name and then
    renamed, so a crash mid-write leaves the old file (or none), never half a file.
    """
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or name == _MARK:
            raise ValueError(f"save: keys must be strings other than {_MARK!r}, got {name!r}")
        value = value.data if isinstance(value, Tensor) else value
        if not backend.is_array(value):
            raise TypeError(f"save: {name!r} is a {type(value).__name__}; only arrays and tensors can be saved")
        arrays[name] = backend.to_host(value)
    arrays[_MARK] = backend.numpy_host.asarray(1)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            backend.save_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path):
    """Read a file written by save() into a dict of name -> NumPy array."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    try:
        arrays = backend.load_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"load: {path} is not a readable minitl checkpoint (truncated or not an .npz): {e}") from None
    if arrays.pop(_MARK, None) is None:
        raise ValueError(f"load: {path} is an .npz but was not written by minitl.save")
    return arrays
