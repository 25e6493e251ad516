"""The local VLM describer: a transformers vision-language model looks at example images and the card.

The default is a Qwen2.5-VL class model, downloaded from the Hugging Face hub on first use (by users with a GPU;
it runs on the CPU too, slowly). Loading is lazy, so choosing this describer costs nothing until it describes.
Cards are generated in batches (left padding, greedy decoding); if a batch fails, its cards are retried one by one
so that one bad card only costs its own description, which then comes from the card-text rules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from embedding.describe_card import safe_describe_card
from embedding.describe_prompt import LLM_PROMPT_VERSION, SYSTEM_PROMPT, card_prompt, repair
from embedding.description import AdapterCard, DescriberError, Description
from embedding.example_images import MAX_SIDE, load_image

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_VLM_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
_DTYPES = ("float32", "float16", "bfloat16")

ImageLoader = Callable[[str], "Image.Image | None"]


class TransformersVLMDescriber:
    """Describes cards with a local image-text-to-text model (AutoProcessor + AutoModelForImageTextToText)."""

    prompt_version = LLM_PROMPT_VERSION

    def __init__(
        self,
        model: str = DEFAULT_VLM_MODEL,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_images: int = 4,
        batch_size: int = 4,
        max_new_tokens: int = 320,
        max_side: int = MAX_SIDE,
        image_loader: ImageLoader | None = None,
    ) -> None:
        """`model` is a hub id or a local directory; `device` defaults to CUDA when present, `dtype` to bfloat16
        there and float32 on CPU. `image_loader` turns an example image URL into a PIL image or None (default:
        example_images.load_image, through the shared ImageFetcher); images it fails on are skipped."""
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be a hub id or a local directory")
        for option, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens),
                              ("max_side", max_side)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be an integer >= 1, got {value!r}")
        if dtype not in (None, *_DTYPES):
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if not isinstance(max_images, int) or max_images < 0:
            raise ValueError(f"max_images must be an integer >= 0, got {max_images!r}")
        self.model_id = model.strip()
        self.name = f"vlm:{self.model_id}"
        self.device = device
        self.dtype = dtype
        self.max_images = max_images
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_side = max_side
        self.image_loader: ImageLoader = image_loader or (lambda url: load_image(url, max_side=max_side))
        self._model: Any = None
        self._processor: Any = None
        self._special_tokens: re.Pattern[str] | None = None

    def _load(self) -> None:
        """Load the processor and model once; a model that cannot be loaded fails every card, so it raises."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, self.dtype) if self.dtype else (
            torch.bfloat16 if device.startswith("cuda") else torch.float32)
        try:
            processor = AutoProcessor.from_pretrained(self.model_id)
            model = AutoModelForImageTextToText.from_pretrained(self.model_id, dtype=dtype)
        except (OSError, ValueError) as error:
            raise DescriberError(
                f"cannot load the VLM {self.model_id!r} ({error}). It is downloaded from the Hugging Face hub on "
                "first use, which needs network access and HF_HUB_OFFLINE unset; or pass a local directory."
            ) from error
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"  # generation appends on the right, so batches pad on the left
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        specials = sorted({*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}, key=len, reverse=True)
        self._special_tokens = re.compile("|".join(map(re.escape, specials))) if specials else None
        self._model = model.to(device).eval()
        self._processor = processor

    def describe(self, cards: Sequence[AdapterCard]) -> list[Description]:
        """One description per card, in order, generated `batch_size` cards at a time."""
        if not cards:
            return []
        self._load()
        fallbacks = [safe_describe_card(card) for card in cards]
        results: list[Description] = []
        for start in range(0, len(cards), self.batch_size):
            batch = list(range(start, min(start + self.batch_size, len(cards))))
            prepared = [self._prepare(cards[i]) for i in batch]
            try:
                replies = self._generate(prepared)
            except Exception:  # OOM, or a processor error on one card's content: isolate the card
                log.warning("describer %s: batch failed; retrying its cards one by one", self.name, exc_info=True)
                replies = [self._generate_alone(item) for item in prepared]
            for i, reply in zip(batch, replies, strict=True):
                described = repair(reply, cards[i], fallbacks[i], self.name) if reply is not None else None
                if described is None:
                    log.warning("describer %s: no usable JSON for version %s; using card text",
                                self.name, cards[i].version_id)
                results.append(described or fallbacks[i])
        return results

    def _images(self, card: AdapterCard) -> list[Image.Image]:
        from PIL import Image

        images: list[Image.Image] = []
        for url in card.example_image_urls[: self.max_images * 2]:  # some may fail to load
            if len(images) == self.max_images:
                break
            try:
                image = self.image_loader(url)
            except Exception:  # a user-supplied loader may fail any way; the image is optional
                log.info("describer %s: image loader failed", self.name, exc_info=True)
                continue
            if isinstance(image, Image.Image):
                image = image.convert("RGB")
                image.thumbnail((self.max_side, self.max_side))
                images.append(image)
        return images

    def _prepare(self, card: AdapterCard) -> tuple[str, list[Image.Image]] | None:
        """The chat-templated text and the images for one card; None when the card cannot even be prepared."""
        try:
            images = self._images(card)
            text = card_prompt(card)
            if self._special_tokens is not None:
                text = self._special_tokens.sub(" ", text)
            messages = [
                {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]},
            ]
            prompt = self._processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # a card whose content breaks the template must not fail the batch
            log.warning("describer %s: cannot prepare version %s", self.name, card.version_id, exc_info=True)
            return None
        return prompt, images

    def _generate(self, prepared: Sequence[tuple[str, list[Image.Image]] | None]) -> list[str | None]:
        import torch

        usable = [item for item in prepared if item is not None]
        if not usable:
            return [None] * len(prepared)
        texts = [text for text, _ in usable]
        images = [image for _, card_images in usable for image in card_images]
        inputs = self._processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(device=self._model.device, dtype=self._model.dtype)
        with torch.inference_mode():
            output = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        decoded = iter(self._processor.batch_decode(new_tokens, skip_special_tokens=True))
        return [next(decoded) if item is not None else None for item in prepared]

    def _generate_alone(self, item: tuple[str, list[Image.Image]] | None) -> str | None:
        try:
            return self._generate([item])[0]
        except Exception:
            log.warning("describer %s: generation failed for one card", self.name, exc_info=True)
            return None
