"""The README's examples run as printed, and print what they say they print."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_examples_run_and_print_what_they_say():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "the README has no python example"
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        printed = out.getvalue().splitlines()
        promised = [m.split("   (")[0].strip() for m in re.findall(r"# prints: (.*)", code)]
        assert printed == promised, (printed, promised)
