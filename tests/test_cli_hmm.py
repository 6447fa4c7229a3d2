"""``elbokit fit hmm`` and its report, on the KJV gospels shipped with elbokit (character
level: the vowel/consonant split at 2 states) and on arrays of sequences."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import elbokit
from elbokit.cli import cli
from elbokit.data.sequences import LETTERS
from elbokit.datasets import kjv_gospels

from .test_hmm import gaussian_data


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def kjv_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kjv")
    text = folder / "gospels.txt"
    text.write_text("\n".join(kjv_gospels()[:250]) + "\n")
    result = invoke("fit", "hmm", text, "--text", "--states", "2", "--n-init", "2", "--seed", "0",
                    "--out", folder / "model")
    assert result.exit_code == 0, result.output
    return folder / "model"


def test_two_states_on_the_kjv_split_vowels_from_consonants(kjv_model):
    model = elbokit.load(kjv_model)
    metrics = json.loads((kjv_model / "metrics.json").read_text())
    assert metrics["alphabet"] == LETTERS and metrics["n_sequences"] == 250
    probs = np.asarray(model.emissionprob_)
    vowel = int(np.argmax(probs[:, [LETTERS.index(c) for c in "aeiou"]].sum(1)))
    more = probs[vowel] > probs[1 - vowel]
    assert all(more[LETTERS.index(c)] for c in "aeiou ")
    assert not any(more[LETTERS.index(c)] for c in "tsrdlmcfgpbvwy")
    # vowels and consonants alternate: each state is more likely to be left than kept
    assert np.all(np.diag(np.asarray(model.transmat_)) < 0.5)


def test_the_report_shows_the_bound_transitions_states_and_emissions(kjv_model):
    result = invoke("report", kjv_model)
    assert result.exit_code == 0, result.output
    page = (kjv_model / "report.html").read_text()
    for heading in ("Training: the bound per iteration", "States and transitions",
                    "Decoded state sequences", "Emission parameters"):
        assert heading in page
    assert page.count("data:image/png;base64,") >= 4
    assert "<span style=" in page  # the verses, coloured by their decoded states


def test_fit_hmm_on_arrays_with_lengths_and_on_a_directory(tmp_path):
    X, lengths = gaussian_data(n_seq=6, T=40)
    np.save(tmp_path / "rows.npy", X)
    np.savetxt(tmp_path / "lengths.txt", lengths, fmt="%d")
    result = invoke("fit", "hmm", tmp_path / "rows.npy", "--lengths", tmp_path / "lengths.txt",
                    "-k", "3", "--out", tmp_path / "m1", "--dtype", "float64")
    assert result.exit_code == 0, result.output
    m1 = elbokit.load(tmp_path / "m1")
    assert isinstance(m1, elbokit.GaussianHMM) and m1.n_features_in_ == 2
    (tmp_path / "seqs").mkdir()
    for i, s in enumerate(np.split(X, np.cumsum(lengths)[:-1])):
        np.save(tmp_path / "seqs" / f"{i}.npy", s)
    result = invoke("fit", "hmm", tmp_path / "seqs", "-k", "3", "--emission", "gmm", "--n-mix", "2",
                    "--out", tmp_path / "m2")
    assert result.exit_code == 0, result.output
    assert isinstance(elbokit.load(tmp_path / "m2"), elbokit.GMMHMM)
    assert invoke("report", tmp_path / "m1").exit_code == 0
    again = CliRunner().invoke(cli, ["fit", "hmm", str(tmp_path / "rows.npy"), "--out",
                                     str(tmp_path / "m1")])
    assert again.exit_code == 2 and "already exists" in again.output
