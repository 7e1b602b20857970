"""CAAS on a real (tiny) Qwen2.5-VL: a no-op at α = 0, local to the window, the promised factor, cache-safe."""

import math
import shutil

import pytest
import torch
from PIL import Image

from eagle_cli.errors import EagleError, ParameterError
from eagle_cli.mllm.caas import _ACTIVE, _Active, caas, caas_attention, visual_columns
from eagle_cli.mllm.hf import HFBackend
from eagle_cli.mllm.prompt import Prompt
from eagle_cli.params import CaasSettings, parse_layers

RED, BLUE = Image.new("RGB", (96, 96), (200, 30, 30)), Image.new("RGB", (112, 84), (20, 30, 200))


def _prompt(uncertain, question="Is there any defect in the object?"):
    return Prompt([{"type": "text", "text": "You inspect manufactured parts."},
                   {"type": "image", "image": RED, "role": "query"},
                   {"type": "text", "text": "red rectangles mark areas"},
                   {"type": "image", "image": BLUE, "role": "boxes"},
                   {"type": "text", "text": question + " A. Yes B. No"}], uncertain=uncertain)


def test_alpha_zero_gives_the_stock_logits_exactly(qwen_backend):
    prompt = _prompt(True)
    stock = qwen_backend.logits([prompt])
    assert torch.equal(qwen_backend.logits([prompt], CaasSettings(alpha=0.0, layers=(1, 2))), stock)


def test_alpha_changes_logits_only_for_prompts_in_the_window(qwen_backend):
    inside, outside = _prompt(True), _prompt(False, "Is the part good?")
    stock = [qwen_backend.logits([p])[0] for p in (inside, outside)]
    with_caas = qwen_backend.logits([inside, outside], CaasSettings(alpha=0.6, layers=(1, 2)))
    assert (with_caas[0] - stock[0]).abs().max() > 1e-3
    assert torch.equal(with_caas[1], stock[1])


def test_the_model_is_back_to_stock_after_the_call(qwen_backend):
    prompt = _prompt(True)
    before = qwen_backend.logits([prompt])
    qwen_backend.logits([prompt], CaasSettings(alpha=0.6, layers=(1, 2)))
    assert qwen_backend.model.config.get_text_config()._attn_implementation == "sdpa"
    assert _ACTIVE.get() is None
    assert torch.equal(qwen_backend.logits([prompt]), before)


def _attentions(backend, prompt, settings=None):
    inputs = backend._inputs([prompt])
    model = backend.model
    with torch.inference_mode():
        if settings is None:
            model.set_attn_implementation({"text_config": "eager"})
            try:
                return model(**inputs, output_attentions=True).attentions, inputs
            finally:
                model.set_attn_implementation({"text_config": "sdpa"})
        with caas(model, settings, backend._columns(inputs, [prompt], settings)):
            return model(**inputs, output_attentions=True).attentions, inputs


def test_scale_mode_multiplies_the_query_image_attention_mass_by_one_plus_alpha(qwen_backend):
    prompt = _prompt(True)
    stock, inputs = _attentions(qwen_backend, prompt)
    boosted, _ = _attentions(qwen_backend, prompt, CaasSettings(alpha=0.6, layers=(1,), mode="scale"))
    columns = qwen_backend._columns(inputs, [prompt], CaasSettings(layers=(1,)))[0]
    assert 0 < columns.sum() < (inputs["input_ids"][0] == qwen_backend.image_token_id).sum()  # query image only
    mass = lambda weights: weights[0][..., columns].sum(-1)  # noqa: E731  (heads, queries)
    # Layer 1's input is untouched (layer 0 is stock), so its weights compare one to one.
    torch.testing.assert_close(mass(boosted[1]), 1.6 * mass(stock[1]), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(boosted[0], stock[0])


class _Module:
    layer_idx = 0
    num_key_value_groups = 2
    is_causal = True
    training = False


def test_renorm_through_sdpa_equals_reweighting_and_renormalising_by_hand():
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, 7, 16, generator=g), torch.randn(2, 2, 7, 16, generator=g),
                         torch.randn(2, 2, 7, 16, generator=g))
    columns = torch.zeros(2, 7, dtype=torch.bool)
    columns[:, 1:4] = True
    token = _ACTIVE.set(_Active(CaasSettings(alpha=0.6, layers=(0,)), columns))
    try:
        out, _ = caas_attention(_Module(), query, key, value, None, scaling=0.25)
    finally:
        _ACTIVE.reset(token)
    keys, values = key.repeat_interleave(2, 1), value.repeat_interleave(2, 1)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    weights = torch.softmax((query @ keys.transpose(2, 3) * 0.25).masked_fill(~causal, -math.inf), -1)
    weights = weights * torch.where(columns[:, None, None, :], 1.6, 1.0)
    weights = weights / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(out, (weights @ values).transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_generation_with_the_kv_cache_matches_a_forward_without_it(qwen_backend):
    prompt = _prompt(True)
    settings = CaasSettings(alpha=0.6, layers=(1, 2))
    inputs = qwen_backend._inputs([prompt])
    model = qwen_backend.model
    with torch.inference_mode(), caas(model, settings, qwen_backend._columns(inputs, [prompt], settings)):
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
        new_tokens = out.sequences.shape[1] - inputs["input_ids"].shape[1]
        token_types = torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, new_tokens))  # generated = text
        full = dict(inputs, input_ids=out.sequences, attention_mask=torch.ones_like(out.sequences),
                    mm_token_type_ids=token_types)
        logits = model(**full, use_cache=False).logits[0]
    start = inputs["input_ids"].shape[1] - 1
    for step, scores in enumerate(out.scores):
        torch.testing.assert_close(scores[0], logits[start + step], rtol=1e-5, atol=1e-5)


def test_layers_outside_the_model_are_refused(qwen_backend):
    with pytest.raises(ParameterError, match=r"\[9, 10, 11, 12, 13, 14\] are outside this model's decoder layers 0–3"):
        qwen_backend.generate([_prompt(True)], CaasSettings(layers=tuple(range(9, 15))))


def test_layer_specs_parse():
    assert parse_layers("9-14") == tuple(range(9, 15)) and parse_layers("1,3-4") == (1, 3, 4)
    assert parse_layers("0.32-0.54") == (0.32, 0.54) == parse_layers((0.32, 0.54))
    for bad in ("nine", "0.6-0.2", "0.5-1.5", "0.x-0.4"):
        with pytest.raises(ParameterError):
            parse_layers(bad)


@pytest.mark.parametrize("depth,layers", [(28, range(9, 15)), (36, range(12, 19)), (64, range(20, 35))])
def test_the_default_band_is_the_references_layers_on_7b_and_the_same_stretch_on_other_sizes(depth, layers):
    assert CaasSettings().indices(depth) == tuple(layers)


def test_a_band_too_narrow_for_the_model_is_refused():
    with pytest.raises(ParameterError, match="holds no layer of this 4-layer model"):
        CaasSettings(layers=(0.3, 0.35)).indices(4)


def test_caas_layers_are_checked_before_the_weights_load(tiny_qwen, tmp_path):
    from eagle_cli.mllm.hf import HFBackend

    shutil.copytree(tiny_qwen, tmp_path / "m")
    for weights in (tmp_path / "m").glob("*.safetensors"):
        weights.write_bytes(b"not weights")  # reading them would fail differently
    with pytest.raises(ParameterError, match="outside this model's decoder layers 0–3"):
        HFBackend.load(str(tmp_path / "m"), device="cpu", caas_settings=CaasSettings(layers=(9,)))


def test_visual_columns_mark_only_the_query_run():
    ids = torch.tensor([[5, 9, 9, 9, 5, 9, 9, 5]])
    cols = visual_columns(ids, 9, [["template", "query"]], "query")
    assert cols.tolist() == [[False, False, False, False, False, True, True, False]]
    assert visual_columns(ids, 9, [["template", "query"]], "all").sum() == 5


def test_a_folder_that_is_not_a_vision_language_model_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(EagleError, match="image-text-to-text"):
        HFBackend.load(str(tmp_path), device="cpu")


def test_the_image_budget_sets_how_many_visual_tokens_an_image_becomes(tiny_qwen):
    from eagle_cli.mllm.hf import HFBackend
    from eagle_cli.params import QWEN_IMAGE_PIXELS, ReasonParams
    from eagle_cli.settings import identity

    def visual_tokens(backend):
        inputs = backend._inputs([_prompt(False)])
        return int((inputs["input_ids"] == backend.image_token_id).sum()) // 2  # two images per prompt

    small = HFBackend.load(str(tiny_qwen), device="cpu", image_pixels=(64 * 28 * 28, 64 * 28 * 28))
    default = HFBackend.load(str(tiny_qwen), device="cpu")
    assert abs(visual_tokens(small) - 64) <= 8  # one token per 28x28 pixels, sides rounded to 28
    assert abs(visual_tokens(default) - QWEN_IMAGE_PIXELS / 28 ** 2) < 0.05 * 512  # the reference's ~512
    budget = identity(ReasonParams(max_pixels=2 * QWEN_IMAGE_PIXELS))
    assert (budget["min_pixels"], budget["max_pixels"]) == (QWEN_IMAGE_PIXELS, 2 * QWEN_IMAGE_PIXELS)
    assert "max_pixels" not in identity(ReasonParams(backend="openai"))  # a server sizes images its own way
    with pytest.raises(ParameterError, match="below --min-pixels"):
        ReasonParams(max_pixels=1000)
