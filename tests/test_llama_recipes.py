"""Issue 15 acceptance on the trained text reference as GGUF, in the real engine: quantkit's allocated
variant (--target-size at the file size of llama.cpp's own Q3_K_M / Q4_K_M, made by llama.cpp's
quantizer from the same checkpoint) has a lower mean KL to the unquantized model than the recipe, with
a file no larger. At the size of uniform 3-bit experts the issue asks for <= 0.7x uniform's KL with
accuracy no worse; on this reference the allocation has 0.68x uniform's KL over all positions but
1.28x on the answer positions (README), an expected failure. bench/allocation_bound.py measured every
unit at every width here: no assignment of llama.cpp's units (9 stacked tensors, Q2_K / Q3_K / Q4_K /
Q5_K / Q6_K / Q8_0) reaches 0.7x on the answer positions (the best is uniform Q3_K itself); over all
positions the best is 0.61x predicted (0.78x measured). In vLLM's units the text reference does reach 0.7x
(tests/test_allocate.py). Everything runs in llama.cpp
(bench/llama_recipes.py; `python -m bench.llama_recipes` for the full figures).

KL is taken where the model learned something: the answer positions (the value's digits and the end
of sentence). The positions before them predict the user's key, which is random by construction: the
model's distribution there is untrained, and the KL there is reported (`kl_all`) but not a target."""
import pytest

pytest.importorskip("llama_cpp")

from bench.llama_recipes import RECIPES, compare  # noqa: E402
from quantkit.reference.trained_text import TRAINED_TEXT_DIR  # noqa: E402

ITEMS = 300  # the whole eval split the README's figures use


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return compare(TRAINED_TEXT_DIR, tmp_path_factory.mktemp("recipes"), items=ITEMS, log=print)


@pytest.mark.parametrize("recipe", RECIPES)
def test_allocated_beats_llama_cpp_recipe_at_no_larger_size(result, recipe):
    theirs = result["rows"][f"llama.cpp {recipe}"]
    ours = result["rows"][f"quantkit allocated <= {recipe}"]
    assert ours["file_bytes"] <= theirs["file_bytes"]
    assert ours["kl_answer"] < theirs["kl_answer"]


def test_allocated_at_uniform_3bit_size_is_no_larger(result):
    uniform = result["rows"]["quantkit uniform 3-bit experts"]
    ours = result["rows"]["quantkit allocated <= uniform 3-bit experts"]
    assert ours["file_bytes"] <= uniform["file_bytes"]


@pytest.mark.xfail(strict=True, reason="issue 15 open: at uniform Q3_K's size the allocation has 1.27x uniform's "
                   "answer KL (0.71x over all positions), and bench/allocation_bound.py measured that no assignment "
                   "of llama.cpp's 9 units and 4 types reaches 0.7x on the answer positions (best 1.00x: uniform)")
def test_allocated_at_uniform_3bit_size_has_under_0_7x_the_kl(result):
    uniform = result["rows"]["quantkit uniform 3-bit experts"]
    ours = result["rows"]["quantkit allocated <= uniform 3-bit experts"]
    assert ours["kl_answer"] <= 0.7 * uniform["kl_answer"]
    assert ours["accuracy"] >= uniform["accuracy"]


def test_the_source_gguf_is_the_reference_in_llama_cpp(result):
    src = result["rows"]["source"]
    assert src["kl_all"] < 1e-9 and src["accuracy"] >= 0.9
