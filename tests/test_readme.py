"""The README's examples run as printed, and print what they say they print."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"


def test_readme_examples_run_and_print_what_they_say():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "the README has no python example"
    for code in blocks:
        if "import torch" in code:  # the PyTorch example runs where PyTorch is installed
            try:
                import torch
            except ImportError:
                continue
            torch.set_num_threads(1)  # its thread pool and OpenBLAS's fight on two cores
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        printed = out.getvalue().splitlines()
        promised = [m.split("   (")[0].strip() for m in re.findall(r"# prints: (.*)", code)]
        assert printed == promised, (printed, promised)


def test_one_version_and_the_console_script():
    import importlib.metadata

    import pytest
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)

    import minitl
    from minitl.commands import cli
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]  # read from minitl.__version__
    module, function = project["scripts"]["minitl"].split(":")
    assert module == "minitl.commands.cli" and callable(getattr(cli, function))
    try:
        assert importlib.metadata.version("minitl") == minitl.__version__
    except importlib.metadata.PackageNotFoundError:
        pass  # run from a checkout without installing: nothing installed to compare with
    assert f"({minitl.__version__})" in (ROOT / "CHANGELOG.md").read_text()
