"""mt.save / mt.load: state dicts as .npz files, written atomically, read with every byte checked."""

import contextlib
import errno
import os
import secrets
import stat

from minitl import backend
from minitl.autograd import Tensor

_MARK = "__minitl_format__"  # a key that tells our files from any other .npz, holding the format
FORMAT = 1


def save(state_dict, path):
    """Write a dict of name -> array (or Tensor) to `path` as .npz (host arrays, any device).

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
        if not backend.is_array(value):
            raise TypeError(f"save: {name!r} is a {type(value).__name__}; only arrays and tensors can be saved")
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            raise TypeError(f"save: {name!r} holds {value.dtype} data; only arrays of numbers can be saved")
        arrays[name] = backend.to_host(value)
    arrays[_MARK] = backend.numpy_host.asarray(FORMAT)
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ValueError(f"save: {path!r} is {'a folder' if path else 'empty'}: give the name of a file to write")
    with atomic_write(path) as f:
        backend.write_npz(f, arrays)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write to a new file at `path` all at once: the data goes to a unique temporary file beside
    it, which is renamed over `path` only when the block ends without error. A crash leaves the
    old file (or none); an error removes the temporary file. A new file gets the permissions
    open() would give it (0666 less the umask), a file written again keeps its own if its owner
    could read it (an unreadable one gets a new file's); a read-only file (its owner may read
    but not write it) is refused, as open() refuses it; a symbolic link is followed; and two
    writers never share a temporary name."""
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
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"load: {path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):  # a named pipe or a device would block, or never end
        raise ValueError(f"load: {path} is not a regular file")
    try:
        arrays = backend.read_npz(path)
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
