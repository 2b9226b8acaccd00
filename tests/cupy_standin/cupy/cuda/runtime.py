"""cupy.cuda.runtime for the stand-in: one device, named so that nobody mistakes it for a GPU."""

NAME = "CuPy stand-in (NumPy, no GPU)"


def getDeviceCount():
    return 1


def getDeviceProperties(device):
    if device != 0:
        raise RuntimeError(f"cudaErrorInvalidDevice: the stand-in has one device (0), not {device}")
    return {"name": NAME.encode(), "totalGlobalMem": 16 * 2**30, "multiProcessorCount": 1, "major": 0, "minor": 0}
