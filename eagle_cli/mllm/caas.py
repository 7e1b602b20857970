"""CAAS: strengthen a decoder's attention to the query image's visual tokens, for one call only.

Paper (eagle-method.md D): in intermediate decoder layers, multiply the attention weights on the
image's visual tokens by (1 + α), α = 0.6, when the expert is unsure (τ < score < S_max). The
released reference code configures its patch as a no-op and multiplies pre-softmax logits, a
different operation; eagle implements the paper's.

Modes:
- ``renorm``: multiply those weights by 1 + α and renormalise each row. That equals adding
  log(1 + α) to their pre-softmax scores, so it runs as an additive bias through SDPA.
- ``scale``: multiply without renormalising (rows then sum to more than 1); needs the weights,
  so it computes attention eagerly.

The attention function is registered once under the name ``eagle_caas`` and does nothing unusual
unless a :func:`caas` context is active; the context switches the language model to it and back.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from eagle_cli.errors import ParameterError
from eagle_cli.params import CaasSettings

NAME = "eagle_caas"


class _Active:
    """The settings and visual-token columns of the current call, with per-column factors precomputed.

    Columns are padded once with room for generated tokens (never visual), so each attention call
    only slices: the hook runs in every chosen layer at every decoding step.
    """

    def __init__(self, settings: CaasSettings, columns: torch.Tensor, room: int = 1024):
        self.settings = settings
        padded = torch.nn.functional.pad(columns, (0, room), value=False)
        self.log_boost = torch.where(padded, math.log1p(settings.alpha), 0.0)  # renorm: additive, (B, L)
        self.factor = torch.where(padded, 1.0 + settings.alpha, 1.0)  # scale: multiplicative, (B, L)

    def row(self, table: torch.Tensor, key_len: int, like: torch.Tensor) -> torch.Tensor:
        """``table`` for the first ``key_len`` key positions as ``(B, 1, 1, K)`` on ``like``'s device and dtype."""
        if key_len > table.shape[1]:
            table = torch.nn.functional.pad(table, (0, key_len - table.shape[1]), value=float(table[0, -1]))
        return table[:, None, None, :key_len].to(device=like.device, dtype=like.dtype)


_ACTIVE: ContextVar[_Active | None] = ContextVar(NAME, default=None)


def _with_bias(mask: torch.Tensor | None, bias: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    """Combine the model's mask (boolean, additive float, or None for causal) with an additive bias."""
    if mask is None:
        if q_len == 1:
            return bias  # one new token attends to every cached key
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=bias.device).tril(k_len - q_len)[None, None]
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, torch.finfo(bias.dtype).min)
    return mask + bias


def caas_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention with the active CAAS in its layers: SDPA with a bias (renorm) or eager weights (scale)."""
    active = _ACTIVE.get()
    chosen = active is not None and getattr(module, "layer_idx", None) in active.settings.layers \
        and active.settings.alpha > 0
    if active is None or (active.settings.mode == "renorm" and not chosen):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    q_len, k_len = query.shape[2], key.shape[2]
    if active.settings.mode == "renorm":
        mask = _with_bias(attention_mask, active.row(active.log_boost, k_len, query), q_len, k_len)
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling, dropout=dropout,
                                      is_causal=False, **kwargs)
    # scale: every layer runs eagerly while the context is active, so all of them expose weights.
    mask = _with_bias(attention_mask, torch.zeros(1, 1, 1, k_len, dtype=query.dtype, device=query.device),
                      q_len, k_len)
    keys = repeat_kv(key, module.num_key_value_groups)
    values = repeat_kv(value, module.num_key_value_groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    weights = torch.softmax((query @ keys.transpose(2, 3)) * scale + mask, dim=-1, dtype=torch.float32)
    if chosen:
        weights = weights * active.row(active.factor, k_len, weights)
    weights = weights.to(query.dtype)
    return (weights @ values).transpose(1, 2).contiguous(), weights


AttentionInterface.register(NAME, caas_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def visual_columns(input_ids: torch.Tensor, image_token_id: int, image_roles: list[list[str]],
                   which: str) -> torch.Tensor:
    """Mark the image tokens to strengthen: each prompt's query image, or all its images.

    Each image is one contiguous run of ``image_token_id``; the k-th run is the k-th image item
    of that prompt (``image_roles[b][k]``).
    """
    is_image = input_ids == image_token_id
    if which == "all":
        return is_image
    columns = torch.zeros_like(is_image)
    for b, roles in enumerate(image_roles):
        positions = torch.nonzero(is_image[b]).flatten()
        if positions.numel() == 0:
            continue
        starts = torch.cat([positions[:1], positions[1:][positions[1:] != positions[:-1] + 1]])
        ends = torch.cat([positions[:-1][positions[1:] != positions[:-1] + 1], positions[-1:]])
        if len(starts) != len(roles):
            raise ParameterError(f"Found {len(starts)} image-token runs for {len(roles)} images in prompt {b}; "
                                 "this model's image tokens are not contiguous per image, use --caas-images all.")
        for start, end, role in zip(starts, ends, roles, strict=True):
            if role == "query":
                columns[b, start:end + 1] = True
    return columns


@contextmanager
def caas(model, settings: CaasSettings, columns: torch.Tensor) -> Iterator[None]:
    """Within the block, ``model``'s language model attends with CAAS on ``columns`` ``(B, L) bool``."""
    text_config = model.config.get_text_config()
    previous = text_config._attn_implementation
    token = _ACTIVE.set(_Active(settings, columns))
    model.set_attn_implementation({"text_config": NAME})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": previous})
        _ACTIVE.reset(token)
