"""Regenerate cupy_names.py from the installed CuPy: the names the stand-in may expose.

    python tests/cupy_standin/make_cupy_names.py      (with the real CuPy importable; no GPU needed)

CuPy imports without a GPU, so this runs on any machine where `pip install cupy-cuda13x` works.
"""

import pathlib
import pprint
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]  # the real CuPy, not the stand-in


def public(obj, keep=()):
    return sorted(n for n in dir(obj) if not n.startswith("_") or n in keep)


def main():
    import cupy
    import cupy.cuda.runtime
    import cupy.lib.stride_tricks
    import cupyx

    assert not getattr(cupy, "_IS_STANDIN", False), "run this with the real CuPy, not the stand-in"
    names = {
        "MODULE": public(cupy),
        "NDARRAY": public(cupy.ndarray, keep=("__array__", "__array_ufunc__", "__array_function__",
                                             "__cuda_array_interface__", "__dlpack__")),
        "CUPYX": public(cupyx),
        "CUDA": public(cupy.cuda),
        "CUDA_RUNTIME": public(cupy.cuda.runtime),
        "STRIDE_TRICKS": public(cupy.lib.stride_tricks),
        # the ufuncs take only CuPy arrays and scalars (no lists, no NumPy arrays)
        "UFUNCS": sorted(n for n in public(cupy) if isinstance(getattr(cupy, n), cupy.ufunc)),
    }
    lines = ["# ruff: noqa: E501",
             f'"""Public names of CuPy {cupy.__version__}, written by make_cupy_names.py: the CuPy stand-in',
             'exposes no name outside these (tests/test_cupy_standin.py checks it)."""', "",
             f"CUPY_VERSION = {cupy.__version__!r}", ""]
    for key, value in names.items():
        lines.append(f"{key} = frozenset(" + pprint.pformat(value, width=110, compact=True) + ")")
        lines.append("")
    path = HERE / "cupy_names.py"
    path.write_text("\n".join(lines))
    print(f"wrote {path} ({sum(map(len, names.values()))} names, CuPy {cupy.__version__})")


if __name__ == "__main__":
    main()
