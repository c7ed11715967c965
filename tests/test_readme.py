import pathlib
import re


def test_readme_example_runs_as_written(capsys):
    readme = pathlib.Path(__file__).parents[1] / "README.md"
    (example,) = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(10, 16, 8)" in out
