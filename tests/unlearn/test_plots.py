import json
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


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()  # the IHDR chunk: width, then height, big-endian, from byte 16
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def seven_methods() -> dict:
    """make_results' MaxEnt models copied under the six other methods' names."""
    results = make_results()
    models, methods = results["models"], ["maxent", "graddiff", "rmu", "npo", "simnpo", "sam", "repnoise"]
    for name, model in [(n, m) for n, m in models.items() if ":maxent" in n]:
        for method in methods[1:]:
            models[name.replace(":maxent", f":{method}")] = json.loads(json.dumps(model).replace("maxent", method))
    results["setting"]["methods"] = methods
    return results


def test_seven_methods_wrap_into_rows_of_at_most_four_panels(tmp_path):
    for plot in (plot_method_grid, plot_alpha_tradeoff):
        one_w, one_h = png_size(plot(make_results(), tmp_path / f"one_{plot.__name__}.png"))
        seven_w, seven_h = png_size(plot(seven_methods(), tmp_path / f"seven_{plot.__name__}.png"))
        assert seven_w <= 4.5 * one_w and seven_h >= 1.8 * one_h, (plot.__name__, one_w, one_h, seven_w, seven_h)
