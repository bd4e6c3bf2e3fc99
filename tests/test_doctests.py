"""The ``Example:`` blocks in the core math docstrings run, pass, and can fail.

Each docstring example of flow, pit, remix, mixit and ema is a small tutorial that checks a
key property (sources summing to the mixture, PIT undoing a shuffle, ...). They run here with
the standard ``doctest`` module, so ``pytest -q tests`` keeps them from going stale. The
negative cases below break one function at a time and check that its example then fails:
an example that cannot fail would teach nothing.
"""
import doctest

import pytest
import torch

from surf_mini import ema, flow, mixit, pit, remix

OPTIONS = doctest.NORMALIZE_WHITESPACE

# The public math functions that must each carry a runnable example (docs/modules.md; docs/math.md
# names the function behind each equation).
REQUIRED = {
    flow: ["zero_sum", "initial_state", "interpolate", "clean_estimate", "sample_time",
           "step_sizes", "euler_sample"],
    pit: ["pairwise_cost", "best_permutation", "apply_permutation", "invert_permutation"],
    remix: ["mix", "shuffle_sources", "unshuffle_sources"],
    mixit: ["mixit_loss", "mixture_consistency", "merge_outputs", "output_sparsity"],
    ema: ["ema_update", "beta_at"],
}
MODULES = list(REQUIRED)


def run_examples(func, globs: dict) -> doctest.TestResults:
    """Run the docstring examples of one function with the given globals; quiet."""
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in doctest.DocTestFinder(recurse=False).find(func, func.__name__, globs=globs):
        runner.run(test, out=lambda text: None)
    return doctest.TestResults(runner.failures, runner.tries)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_examples_pass(module):
    result = doctest.testmod(module, optionflags=OPTIONS, report=False)
    assert result.attempted > 0, f"{module.__name__} has no docstring examples left"
    assert result.failed == 0, f"{result.failed} example(s) of {module.__name__} failed (see stdout)"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_core_functions_have_examples(module):
    finder = doctest.DocTestFinder(recurse=False)
    missing = [name for name in REQUIRED[module]
               if not any(t.examples for t in finder.find(getattr(module, name), name))]
    assert not missing, f"{module.__name__}: no Example: block in {missing}"


# Plausible bugs, one per row: (module, name to replace, broken version, docstring to run).
# The broken version replaces the name in the module itself, so it reaches both the
# examples and any function that calls it (a sampler whose zero_sum does nothing).
def _no_projection(x):
    return x                                                  # P_perp forgotten


MUTANTS = [
    (flow, "zero_sum", _no_projection, "zero_sum"),
    (flow, "zero_sum", _no_projection, "euler_sample"),      # sampler without P_perp
    (flow, "clean_estimate", lambda x_t, v, t: x_t + v, "clean_estimate"),   # no (1 - t)
    (pit, "invert_permutation", lambda perm: perm, "invert_permutation"),
    (pit, "best_permutation",
     lambda est, ref: torch.arange(ref.shape[1]).expand(ref.shape[:2]), "best_permutation"),
    (remix, "unshuffle_sources", lambda x, pi: x, "unshuffle_sources"),  # shuffle not undone
    (mixit, "mixture_consistency", lambda est, m: est, "mixture_consistency"),
    (mixit, "remix_outputs",
     lambda est, a, _f=mixit.remix_outputs: _f(est, 1 - a), "mixit_loss"),  # groups swapped
    (ema, "ema_update",
     lambda t, s, alpha, _f=ema.ema_update: _f(t, s, 1.0 - alpha), "ema_update"),
    (ema, "beta_at", lambda step, n: 1.0 - step / max(n, 1), "beta_at"),  # no clamp at 0
]


@pytest.mark.parametrize("module, name, broken, target", MUTANTS,
                         ids=[f"{m.__name__.split('.')[-1]}.{n}->{t}" for m, n, _, t in MUTANTS])
def test_examples_catch_a_broken_function(monkeypatch, module, name, broken, target):
    func = getattr(module, target)                          # the real function's docstring
    before = run_examples(func, dict(vars(module)))
    assert before.failed == 0, f"the example of {target} fails even before the mutation"
    monkeypatch.setattr(module, name, broken)
    result = run_examples(func, dict(vars(module)))
    assert result.attempted > 0
    assert result.failed > 0, f"the example of {target} does not notice a broken {name}"
