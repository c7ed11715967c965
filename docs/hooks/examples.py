"""mkdocs hook: the examples page shows, for every script in `experiments/`, its
docstring's first paragraph, its command, and the measured results it wrote to
`experiments/results/` (`summary.md` or `results.md`, and its figures), read at build
time so that the page always matches the committed results."""

import ast
import pathlib
import re

from mkdocs.structure.files import File


ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
RESULTS = EXPERIMENTS / "results"
MARKER = "<!-- experiments -->"
# Results shown on the benchmarks page rather than here.
ON_BENCHMARKS_PAGE = {"bench_solve", "bench_reversible"}


def _figure_uri(png: pathlib.Path) -> str:
    return f"figures/results/{png.parent.name}/{png.name}"


def on_files(files, config):
    for png in sorted(RESULTS.glob("*/*.png")):
        files.append(File.generated(config, _figure_uri(png), abs_src_path=str(png)))
    return files


def _section(script: pathlib.Path) -> str:
    name = script.stem
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    parts = [f"## `{name}`", first, f"```bash\npython experiments/{name}.py\n```"]
    folder = RESULTS / name
    if name in ON_BENCHMARKS_PAGE:
        parts.append(
            f"Its results are on the [benchmarks page](benchmarks.md) "
            f"(`experiments/results/{name}/`)."
        )
        return "\n\n".join(parts)
    found = [
        p
        for p in (folder / "summary.md", folder / "results.md")
        if p.is_file()
    ]
    if not found:
        parts.append(
            "Its result is at the top of this page."
            if name == "train_hamiltonian"
            else "No results are committed for it yet: run it to measure them."
        )
        return "\n\n".join(parts)
    text = found[0].read_text()
    # The summary's own title repeats the section's: demote its headings.
    text = re.sub(
        r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 1) + " ", text, flags=re.M
    )
    path = found[0].relative_to(ROOT)
    parts += [f"Measured results (`{path}`):", text.strip()]
    for png in sorted(folder.glob("*.png")):
        parts.append(f"![{name}: {png.stem}]({_figure_uri(png)})")
    return "\n\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "examples.md" or MARKER not in markdown:
        return markdown
    scripts = sorted(p for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_"))
    return markdown.replace(MARKER, "\n\n".join(_section(s) for s in scripts))
