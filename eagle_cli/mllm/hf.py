"""In-process multimodal LLM through transformers: any model that loads as image-text-to-text."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from eagle_cli.devices import resolve_device
from eagle_cli.errors import EagleError, ParameterError
from eagle_cli.mllm.caas import caas, visual_columns
from eagle_cli.mllm.prompt import Prompt, Reply
from eagle_cli.params import PRESETS, QWEN_IMAGE_PIXELS, CaasSettings

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _load_advice(name: str) -> str:
    if Path(name).exists():
        return "Check that the folder holds a vision-language model saved with save_pretrained."
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return (f"HF_HUB_OFFLINE=1 is set, so only the local cache is read: download {name!r} on a machine with "
                "network (huggingface-cli download) and copy the cache, or pass a local folder.")
    return "Pass a local folder, or a hub id that is cached (offline: set HF_HUB_OFFLINE=1)."


def _set_image_budget(processor, min_pixels: int, max_pixels: int) -> None:
    """Resize images to between ``min_pixels`` and ``max_pixels`` where the processor sizes them that way."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if hasattr(image_processor, "merge_size") and size is not None and "longest_edge" in size:
        image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}


class HFBackend:
    """A loaded model and its processor; ``generate`` gives greedy answers for batches of prompts."""

    def __init__(self, model, processor, *, name: str, max_new_tokens: int = 128):
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or not hasattr(processor, "image_processor"):
            raise EagleError(f"{name} has no image processor; it is not a vision-language model.")
        tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        self.name, self.model, self.processor = name, model.eval(), processor
        self.device = next(model.parameters()).device
        config = model.config
        self.image_token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
        self.n_layers = config.get_text_config().num_hidden_layers
        self.max_new_tokens = max_new_tokens
        self.revision = getattr(config, "_commit_hash", None)

    @classmethod
    def load(cls, model: str, *, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
             max_new_tokens: int = 128, caas_settings: CaasSettings | None = None,
             image_pixels: tuple[int, int] = (QWEN_IMAGE_PIXELS, QWEN_IMAGE_PIXELS)) -> HFBackend:
        """Load a folder, a cached hub id or a preset (bf16 on a GPU, fp32 on the CPU unless ``dtype`` says).

        CAAS layers are checked against the model's config before any weight is read. Processors that
        size images by a pixel budget (Qwen2-VL and Qwen2.5-VL) get ``image_pixels`` (min, max).
        """
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if dtype not in DTYPES:
            raise ParameterError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
        name = PRESETS.get(model, model)
        target = resolve_device(device)
        chosen = DTYPES[dtype]
        if chosen == "auto":
            chosen = torch.bfloat16 if target.type == "cuda" else torch.float32
        try:
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
            if caas_settings is not None:
                caas_settings.indices(config.get_text_config().num_hidden_layers)
            processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
            loaded = AutoModelForImageTextToText.from_pretrained(name, dtype=chosen,
                                                                 trust_remote_code=trust_remote_code).to(target)
        except (OSError, ValueError, KeyError) as exc:
            raise EagleError(f"Cannot load {name!r} as an image-text-to-text model ({str(exc).splitlines()[0]}). "
                             + _load_advice(name)) from None
        _set_image_budget(processor, *image_pixels)
        return cls(loaded, processor, name=name, max_new_tokens=max_new_tokens)

    def _inputs(self, prompts: list[Prompt]):
        conversations, images = [], []
        for prompt in prompts:
            content = []
            for item in prompt.items:
                if item["type"] == "image":
                    content.append({"type": "image"})
                    images.append(item["image"])
                else:
                    content.append({"type": "text", "text": item["text"]})
            conversations.append([{"role": "user", "content": content}])
        texts = [self.processor.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
        return self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)

    def _columns(self, inputs, prompts: list[Prompt], settings: CaasSettings) -> torch.Tensor:
        if self.image_token_id is None:
            raise EagleError(f"{self.name} does not name its image token in its config; "
                             "CAAS cannot find the visual tokens.")
        roles = [[item.get("role", "") for item in p.items if item["type"] == "image"] for p in prompts]
        return visual_columns(inputs["input_ids"], self.image_token_id, roles, settings.images)

    def _groups(self, prompts: list[Prompt], caas_settings: CaasSettings | None):
        """(indices, settings) per call: prompts outside the CAAS window never see it, bit for bit."""
        if caas_settings is not None:
            caas_settings = replace(caas_settings, layers=caas_settings.indices(self.n_layers))
        plain = [i for i, p in enumerate(prompts) if not (caas_settings and p.uncertain)]
        windowed = [i for i, p in enumerate(prompts) if caas_settings and p.uncertain]
        return [(indices, settings) for indices, settings in ((plain, None), (windowed, caas_settings)) if indices]

    @torch.inference_mode()
    def _run(self, prompts: list[Prompt], caas_settings: CaasSettings | None, step):
        inputs = self._inputs(prompts)
        if caas_settings is None:
            return inputs, step(inputs)
        with caas(self.model, caas_settings, self._columns(inputs, prompts, caas_settings)):
            return inputs, step(inputs)

    def logits(self, prompts: list[Prompt], caas_settings: CaasSettings | None = None) -> torch.Tensor:
        """Next-token logits ``(B, V)`` after each prompt (for tests and diagnostics)."""
        out = [None] * len(prompts)
        for indices, settings in self._groups(prompts, caas_settings):
            _, logits = self._run([prompts[i] for i in indices], settings, lambda x: self.model(**x).logits[:, -1])
            for i, row in zip(indices, logits, strict=True):
                out[i] = row
        return torch.stack(out)

    def generate(self, prompts: list[Prompt], caas_settings: CaasSettings | None = None) -> list[Reply]:
        """Greedy replies in input order; CAAS (when given) acts only on prompts in the window."""
        replies: list[Reply | None] = [None] * len(prompts)
        for indices, settings in self._groups(prompts, caas_settings):
            start = time.perf_counter()
            def greedy(x):
                return self.model.generate(**x, max_new_tokens=self.max_new_tokens, do_sample=False)

            inputs, out = self._run([prompts[i] for i in indices], settings, greedy)
            texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            seconds = (time.perf_counter() - start) / len(indices)
            for i, text in zip(indices, texts, strict=True):
                replies[i] = Reply(text, seconds, settings is not None)
        return replies
