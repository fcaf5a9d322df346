"""Expected gradients and GradientSHAP: exact on a linear model, complete in expectation, the same numbers as
Captum's GradientShap when fed its draws, and the call contract (seed, batches, rows, cancel, bad folders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torch import nn

from explainers import METHODS, ParameterError, Sanity, explain
from explainers.baselines import DISTRIBUTIONS
from explainers.cli.main import main
from explainers.methods import expected

from ...conftest import sample_path
from ..helpers import assert_cancel_stops_cleanly, hook_counts, relative_max_difference, small_convnet, tiny_bundle

captum_attr = pytest.importorskip("captum.attr")

NAMES = ("expected_gradients", "gradient_shap")
SIZE = 16


@pytest.fixture
def net():
    return small_convnet()


@pytest.fixture
def images():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def linear_model(classes: int = 4) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, classes)).eval()
    with torch.no_grad():
        model[1].weight.mul_(20)  # scores that move by whole units
    return model


def reference_folder(folder, count: int = 1, seed: int = 0):
    """``folder`` holding ``count`` random SIZE x SIZE PNGs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"ref{i}.png")
    return folder


# ---------------------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registration(name):
    info = METHODS[name]
    assert info.display_name == {"expected_gradients": "Expected gradients", "gradient_shap": "GradientSHAP"}[name]
    assert info.family == "Gradient" and info.attribution_channels is None
    assert info.stochastic and info.is_stochastic() and not info.smoothgrad_base
    assert info.sanity is Sanity.UNTESTED and "integrated gradients" in info.sanity_note
    assert info.reference.arxiv == {"expected_gradients": "1906.10670", "gradient_shap": "1705.07874"}[name]
    assert info.formula and info.summary and info.weaknesses
    # the input, then per sample its baseline's clean forward and one forward+backward on the path
    assert info.passes({"n_samples": 10}, (32, 32)) == (21, 10)
    assert info.passes() == (1 + 2 * info.params["n_samples"].default, info.params["n_samples"].default)
    refs = info.params["references"]
    assert refs.kind == "folder" and refs.applies({"distribution": "references"})
    assert not any(refs.applies({"distribution": d}) for d in DISTRIBUTIONS if d != "references")
    assert set(info.params["distribution"].choices) == set(DISTRIBUTIONS)
    assert ("noise_level" in info.params) == (name == "gradient_shap")


# ---------------------------------------------------------------------------------------------------------
# exact properties
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_linear_model_with_one_reference_gives_weights_times_difference(tmp_path, name):
    """f(x) = w·x + b has gradient w everywhere, so whatever α is drawn, every sample is w ⊙ (x − x′); with one
    reference image every baseline is x′ and the map is exactly w ⊙ (x − x′), summing to f(x) − f(x′)."""
    model = linear_model()
    bundle = tiny_bundle(model, categories=list("abcd"), size=SIZE)
    folder = reference_folder(tmp_path / "refs")
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    noise = {"noise_level": 0.0} if name == "gradient_shap" else {}
    result = explain(bundle, x, name, target=2, seed=4, n_samples=9, distribution="references",
                     references=str(folder), **noise)
    reference = bundle.preprocess(Image.open(folder / "ref0.png"))
    weights = model[1].weight[2].detach().view(1, 3, SIZE, SIZE)
    expected_map = weights * (x - reference)
    torch.testing.assert_close(result.attribution, expected_map, rtol=1e-5, atol=1e-6 * float(expected_map.abs().max()))
    with torch.no_grad():
        gap = model(x)[:, 2] - model(reference)[:, 2]
    torch.testing.assert_close(result.extras["score_gap"], gap, rtol=1e-5, atol=1e-5)
    assert result.extras["completeness_delta"].abs().max() <= 1e-4 * gap.abs().max()


@pytest.mark.parametrize("distribution", ["blur", "uniform_noise"])
def test_linear_model_is_complete_exactly_for_every_draw(distribution):
    """On a linear model each sample is exact, so the sum equals the mean score gap over the drawn baselines."""
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    result = explain(linear_model(), x, "expected_gradients", target=1, seed=0, n_samples=6,
                     distribution=distribution)
    gap = result.extras["score_gap"]
    assert gap.abs().min() > 0.1  # the check below means something
    # float32 rounding of the summed terms, nothing more
    scale = result.attribution.abs().sum(dim=(1, 2, 3))
    assert (result.extras["completeness_delta"].abs() <= 1e-5 * scale).all()


def test_gradient_shap_without_noise_is_expected_gradients(net, images):
    plain = explain(net, images, "expected_gradients", target=1, seed=3, n_samples=6)
    shap0 = explain(net, images, "gradient_shap", target=1, seed=3, n_samples=6, noise_level=0.0)
    noisy = explain(net, images, "gradient_shap", target=1, seed=3, n_samples=6, noise_level=0.1)
    assert torch.equal(plain.attribution, shap0.attribution)
    assert relative_max_difference(noisy.attribution, plain.attribution) > 0.05


# ---------------------------------------------------------------------------------------------------------
# completeness in expectation
# ---------------------------------------------------------------------------------------------------------


def _deltas(net, x, n_samples, seeds):
    return np.array([float(explain(net, x, "expected_gradients", target=3, seed=seed, n_samples=n_samples,
                                   distribution="uniform_noise").extras["completeness_delta"][0]) for seed in seeds])


def test_completeness_holds_in_expectation_and_its_error_shrinks_as_one_over_root_n(net):
    """sum(A) − mean_i (f(x) − f(x′_i)) is a mean of n independent zero-mean terms (the one-point estimate of each
    path integral minus its value), so its mean square is σ²/n. σ² comes from independent one-sample runs; the
    mean square over R seeds at n samples, times R·n/σ², is χ²(R)-distributed: it must stay under the 99.99%
    quantile, and the error at 256 samples must be below the error at 4."""
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    single = _deltas(net, x, 1, range(1000, 1400))
    variance = float(np.mean(single**2))  # about 0 by the claim under test; do not subtract the sample mean
    assert variance > 1e-4  # a real spread, so the bounds below are not trivially met
    repeats = 10
    limit = stats.chi2.ppf(0.9999, repeats) / repeats
    mean_square = {}
    for n in (4, 256):
        deltas = _deltas(net, x, n, range(repeats))
        mean_square[n] = float(np.mean(deltas**2))
        assert mean_square[n] <= limit * variance / n, (n, mean_square[n], variance / n)
    assert mean_square[256] < mean_square[4]


# ---------------------------------------------------------------------------------------------------------
# Captum's GradientShap
# ---------------------------------------------------------------------------------------------------------


class Recorder:
    """Wraps ``expected.draw``, keeping what it drew."""

    def __init__(self):
        self.draws = None
        self.original = expected.draw

    def __call__(self, *args, **kwargs):
        self.draws = self.original(*args, **kwargs)
        return self.draws


def test_agrees_with_captum_gradient_shap_in_rank_at_500_samples(monkeypatch):
    """Independent draws of α (and of which baseline): both estimate the same expectation over the same 500
    baselines, so at 500 samples the maps rank the pixels alike."""
    net = small_convnet(2)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    recorder = Recorder()
    monkeypatch.setattr(expected, "draw", recorder)
    ours = explain(net, x, "gradient_shap", target=4, seed=0, n_samples=500, noise_level=0.0, distribution="blur")
    baselines = recorder.draws.baselines[0]
    assert len(baselines) == 500
    torch.manual_seed(0)
    np.random.seed(0)
    theirs = captum_attr.GradientShap(net).attribute(x, baselines=baselines, n_samples=500, stdevs=0.0, target=4)
    rho = stats.spearmanr(ours.attribution.flatten().numpy(), theirs.detach().flatten().numpy()).statistic
    assert rho >= 0.95, rho
    assert hook_counts(net) == 0


def _captum_draws(seed, count, n_samples, shape, stdev):
    """The draws Captum's GradientShap makes after seeding NumPy and torch with ``seed``, in its order: the
    baseline picks (NumPy), the input noise (torch), the path positions (NumPy)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    picks = np.random.choice(count, n_samples).tolist()
    noise = torch.normal(0, torch.tensor(stdev).repeat((n_samples, *shape)))
    alphas = np.random.uniform(0.0, 1.0, n_samples)
    return picks, noise, alphas


@pytest.mark.parametrize("noise_level", [0.0, 0.05])
def test_equals_captum_gradient_shap_when_fed_its_draws(monkeypatch, noise_level):
    """The same baselines, α and noise through both: the same numbers (relative max difference ≤ 1e-4)."""
    net = small_convnet(1)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    pool = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10))
    n_samples, seed = 12, 21
    stdev = noise_level * float(x.max() - x.min())
    picks, noise, alphas = _captum_draws(seed, len(pool), n_samples, x.shape[1:], stdev)

    def fed(call, inputs, n, distribution, references, noisy):
        assert n == n_samples and noisy == (noise_level > 0)
        return expected.Draws(pool[picks].unsqueeze(0), torch.as_tensor(alphas, dtype=inputs.dtype),
                              noise / stdev if noisy else None)

    monkeypatch.setattr(expected, "draw", fed)
    ours = explain(net, x, "gradient_shap", target=5, seed=0, n_samples=n_samples, noise_level=noise_level,
                   batch_size=n_samples)
    np.random.seed(seed)
    torch.manual_seed(seed)
    theirs = captum_attr.GradientShap(net).attribute(x, baselines=pool, n_samples=n_samples, stdevs=stdev, target=5)
    assert relative_max_difference(ours.attribution, theirs) <= 1e-4
    # and the draws matter: Captum with other draws is not this close
    np.random.seed(seed + 1)
    torch.manual_seed(seed + 1)
    other = captum_attr.GradientShap(net).attribute(x, baselines=pool, n_samples=n_samples, stdevs=stdev, target=5)
    assert relative_max_difference(ours.attribution, other) > 0.01


# ---------------------------------------------------------------------------------------------------------
# the call contract
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_seed_batch_size_and_rows(net, images, name):
    """Same seed, same map; another seed, another; any batch size, the same map; a row alone, its map in the
    batch (every row gets the same draws)."""
    params = dict(target=2, seed=7, n_samples=9)
    maps = [explain(net, images, name, batch_size=b, **params).attribution for b in (1, 4, 64)]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-5, atol=1e-6 * float(maps[0].abs().max()))
    assert torch.equal(explain(net, images, name, batch_size=4, **params).attribution, maps[1])
    other_seed = explain(net, images, name, **{**params, "seed": 8}).attribution
    assert relative_max_difference(other_seed, maps[0]) > 0.01
    alone = explain(net, images[1:], name, batch_size=4, **params)
    together = explain(net, images, name, batch_size=4, **params)
    torch.testing.assert_close(alone.attribution[0], together.attribution[1], rtol=1e-5,
                               atol=1e-6 * float(together.attribution.abs().max()))
    torch.testing.assert_close(alone.extras["score_gap"][0], together.extras["score_gap"][1], rtol=1e-5, atol=1e-5)
    assert hook_counts(net) == 0


@pytest.mark.parametrize("name", NAMES)
def test_cancel_stops_cleanly(net, images, name):
    assert_cancel_stops_cleanly(net, images, name, n_samples=8, batch_size=2)


def test_progress_counts_every_sample_of_every_row(net, images):
    seen = []
    explain(net, images, "gradient_shap", target=0, seed=0, n_samples=5, batch_size=3,
            progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {10} and seen[-1][0] == 10


def test_a_single_colour_image_with_blurred_baselines_has_no_path_and_says_so(net):
    x = torch.full((1, 3, SIZE, SIZE), 0.3)
    result = explain(net, x, "expected_gradients", target=0, seed=0, n_samples=4, distribution="blur")
    assert not result.attribution.any()
    assert float(result.extras["score_gap"][0]) == 0.0
    assert any("every drawn blur baseline equals this input" in note for note in result.notes[0])


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_or_missing_reference_folder_is_a_parameter_error(tmp_path, name):
    bundle = tiny_bundle(size=SIZE)
    x = torch.zeros(1, 3, SIZE, SIZE)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(ParameterError, match="holds no images"):
        explain(bundle, x, name, target=0, n_samples=2, distribution="references", references=str(empty))
    with pytest.raises(ParameterError, match="needs a folder of reference images"):
        explain(bundle, x, name, target=0, n_samples=2, distribution="references")
    with pytest.raises(ParameterError, match="does not exist"):
        explain(bundle, x, name, target=0, n_samples=2, distribution="references", references=str(tmp_path / "no"))
    assert hook_counts(bundle.model) == 0


def test_the_cli_says_an_empty_reference_folder_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["explain", str(sample_path("cat.png")), "--out", str(tmp_path / "out"), "--method", "gradient_shap",
                 "--param", "distribution=references", "--param", f"references={empty}", "--param", "n_samples=2",
                 "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "holds no images" in lines[0] and str(empty) in lines[0]
