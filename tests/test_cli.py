"""The elbokit command."""

import re

from click.testing import CliRunner

from elbokit.cli import main


def test_tour_reports_bounds_clusters_and_agreement():
    result = CliRunner().invoke(main, ["tour", "--n-init", "2"])
    assert result.exit_code == 0, result.output
    bounds = [float(b) for b in re.findall(r"iteration\s+\d+\s+bound\s+(-?\d+\.\d+)", result.output)]
    assert len(bounds) >= 2
    ari = float(re.search(r"adjusted Rand index (\d\.\d+)", result.output).group(1))
    assert ari > 0.8  # the wine cultivars are recovered
    assert "majority class" in result.output


def test_unknown_dataset_is_a_usage_error():
    result = CliRunner().invoke(main, ["tour", "--dataset", "nope"])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "tour" in result.output
