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
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from eagle_cli.errors import ParameterError
from eagle_cli.mllm.settings import CaasSettings

NAME = "eagle_caas"


@dataclass(frozen=True)
class _Active:
    settings: CaasSettings
    columns: torch.Tensor  # (B, L0) bool: key positions whose attention is strengthened

    def column_mask(self, key_len: int) -> torch.Tensor:
        """``(B, key_len)``; positions generated after the prompt are never visual tokens."""
        cols = self.columns
        if key_len > cols.shape[1]:
            cols = torch.nn.functional.pad(cols, (0, key_len - cols.shape[1]), value=False)
        return cols[:, :key_len]


_ACTIVE: ContextVar[_Active | None] = ContextVar(NAME, default=None)


def _additive_mask(mask: torch.Tensor | None, batch: int, q_len: int, k_len: int, dtype, device) -> torch.Tensor:
    """An additive float mask ``(B or 1, 1, Q, K)`` from a boolean one, a float one, or None (causal)."""
    if mask is None:
        rows = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
        mask = (torch.arange(k_len, device=device)[None, :] <= rows)[None, None]
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def caas_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention with the active CAAS in its layers: SDPA with a bias (renorm) or eager weights (scale)."""
    active = _ACTIVE.get()
    chosen = active is not None and getattr(module, "layer_idx", None) in active.settings.layers \
        and active.settings.alpha > 0
    if active is None or (active.settings.mode == "renorm" and not chosen):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    batch, _, q_len, _ = query.shape
    k_len = key.shape[-2]
    boosted = active.column_mask(k_len).to(query.device)[:, None, None, :] & chosen  # (B, 1, 1, K)
    mask = _additive_mask(attention_mask, batch, q_len, k_len, query.dtype, query.device)
    if active.settings.mode == "renorm":
        bias = torch.zeros(boosted.shape, dtype=query.dtype, device=query.device)
        bias.masked_fill_(boosted, math.log1p(active.settings.alpha))
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, mask + bias, scaling=scaling, dropout=dropout,
                                      is_causal=False, **kwargs)
    # scale: every layer runs eagerly while the context is active, so all of them expose weights.
    keys = repeat_kv(key, module.num_key_value_groups)
    values = repeat_kv(value, module.num_key_value_groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    weights = torch.softmax((query @ keys.transpose(2, 3)) * scale + mask, dim=-1, dtype=torch.float32)
    weights = (weights * torch.where(boosted, 1.0 + active.settings.alpha, 1.0)).to(query.dtype)
    return (weights @ values).transpose(1, 2).contiguous(), weights


AttentionInterface.register(NAME, caas_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def visual_columns(input_ids: torch.Tensor, image_token_id: int, image_roles: list[list[str]], which: str) -> torch.Tensor:
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
        for start, end, role in zip(starts, ends, roles):
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
