from pathlib import Path

from test_report import make_results

from unlearn.comparison_plots import plot_alpha_line, plot_frontier, plot_method_grid
from unlearn.plots import plot_alpha_tradeoff, plot_relearning
from unlearn.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes=10_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) >= min_bytes, f"{path}: {len(data)} bytes"


def test_write_report_writes_markdown_and_linked_figures(tmp_path):
    paths = write_report(make_results(), tmp_path / "report")
    assert paths[0] == tmp_path / "report" / "report.md"
    figures = paths[1:]
    assert len(figures) == 5 and all(p.suffix == ".png" for p in figures)
    md = paths[0].read_text()
    for figure in figures:
        assert_png(figure)
        assert f"]({figure.name})" in md  # the report links every figure by its relative name


def test_each_plot_returns_its_path_and_draws_more_with_more_models(tmp_path):
    full, partial = make_results(), make_results()
    partial["models"] = {"base": partial["models"]["base"]}
    for plot in (plot_relearning, plot_alpha_tradeoff, plot_frontier, plot_method_grid, plot_alpha_line):
        assert plot(full, tmp_path / f"full_{plot.__name__}.png") == tmp_path / f"full_{plot.__name__}.png"
        plot(partial, tmp_path / f"partial_{plot.__name__}.png")
        assert (tmp_path / f"full_{plot.__name__}.png").read_bytes() != \
            (tmp_path / f"partial_{plot.__name__}.png").read_bytes()


def test_partial_results_still_give_every_figure(tmp_path):
    results = make_results()
    models = results["models"]
    del models["gold"], models["undo:maxent:alpha=1"]["relearn"], models["undo:maxent:alpha=0.6"]["compute"]
    del models["unlearned:maxent"]["retain_accuracy"], models["base"]["relearn"]["area"]
    for path in write_report(results, tmp_path)[1:]:
        assert_png(path)
    for path in write_report({"models": {"base": {}}}, tmp_path / "empty")[1:]:
        assert_png(path, min_bytes=1_000)
