"""Run every lesson in order; stop at the first that fails.

    python lessons/run_all.py [--quick] [--device cpu|cuda]
"""

import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).parent


def lessons():
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def main(argv):
    for lesson in lessons():
        print(f"\n=== {lesson.name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(lesson), *argv])
        print(f"=== {lesson.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
