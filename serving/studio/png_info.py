"""A1111-style generation parameters in a PNG's text chunk, their parser, and a JSON sidecar.

The "parameters" tEXt chunk is what AUTOMATIC1111, ComfyUI importers, Civitai's uploader and many viewers read:

    a castle on a hill, <lora:watercolor:0.8>
    Negative prompt: blurry, lowres
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: 6ce0161689,
    Model: dreamshaper_8, Lora hashes: "watercolor: 0123456789", Version: zoo

(the last line is one line). Model hash and Lora hashes are AutoV2 hashes: the first 10 hex digits of the file's
SHA256, which Civitai resolves to the model version.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crawlers.a1111 import model_tags

PARAMETERS_KEY = "parameters"
VERSION = "zoo"

# A1111's own pattern for `key: value` pairs (a value may be a quoted string holding commas).
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")


def autov2(sha256: str | None) -> str | None:
    """Civitai's AutoV2 hash: the first 10 hex digits of the SHA256 (lower case, as A1111 writes it)."""
    return sha256.strip().lower()[:10] if sha256 else None


def lora_tag(name: str, weight: float) -> str:
    return f"<lora:{_safe_name(name)}:{_num(weight)}>"


def _num(x: float) -> str:
    """1.0 -> '1', 0.75 -> '0.75', 7.5 -> '7.5' (as A1111 prints numbers)."""
    return f"{float(x):g}" if float(x) != int(x) else str(int(x))


def _safe_name(name: str) -> str:
    """A LoRA name as it can stand in a tag or the 'Lora hashes' list (no ':', ',', '<', '>', '"')."""
    return re.sub(r'[:,<>"\n]', "_", name).strip()


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:"\n') else value


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
    return value


_HASH_LISTS = ("Lora hashes", "TI hashes")  # written as one quoted "name: hash, ..." value, as A1111 does


@dataclass
class GenerationParameters:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    sampler: str = "Euler a"  # the A1111 sampler name
    cfg_scale: float = 7.0
    seed: int = -1
    width: int = 512
    height: int = 512
    model_hash: str | None = None  # AutoV2
    model: str | None = None
    lora_hashes: dict[str, str] = field(default_factory=dict)  # name -> AutoV2
    ti_hashes: dict[str, str] = field(default_factory=dict)  # textual-inversion name -> AutoV2
    clip_skip: int | None = None
    denoising_strength: float | None = None
    version: str = VERSION
    extra: dict[str, str] = field(default_factory=dict)  # other `key: value` pairs, kept verbatim

    def lora_tags(self) -> list[tuple[str, float]]:
        """(name, weight) of every `<lora:name:w>` tag in the prompt (weight 1 when omitted)."""
        return [(tag.name, 1.0 if tag.weight is None else tag.weight)
                for tag in model_tags(self.prompt) if tag.kind == "lora"]

    def to_text(self) -> str:
        pairs: list[tuple[str, str]] = [
            ("Steps", str(int(self.steps))),
            ("Sampler", self.sampler),
            ("CFG scale", _num(self.cfg_scale)),
            ("Seed", str(int(self.seed))),
            ("Size", f"{int(self.width)}x{int(self.height)}"),
        ]
        if self.model_hash:
            pairs.append(("Model hash", self.model_hash))
        if self.model:
            pairs.append(("Model", self.model))
        if self.denoising_strength is not None:
            pairs.append(("Denoising strength", _num(self.denoising_strength)))
        if self.clip_skip is not None:
            pairs.append(("Clip skip", str(int(self.clip_skip))))
        for key, hashes in (("Lora hashes", self.lora_hashes), ("TI hashes", self.ti_hashes)):
            if hashes:
                pairs.append((key, '"' + ", ".join(f"{_safe_name(n)}: {h}" for n, h in hashes.items()) + '"'))
        pairs.extend(self.extra.items())
        pairs.append(("Version", self.version))
        line = ", ".join(f"{k}: {v if k in _HASH_LISTS else _quote(str(v))}" for k, v in pairs)
        text = self.prompt.strip()
        if self.negative_prompt.strip():
            text += "\nNegative prompt: " + self.negative_prompt.strip()
        return text + "\n" + line


def parse_parameters(text: str) -> GenerationParameters:
    """Parse an A1111 'parameters' text (what `to_text` writes, and what A1111 and Civitai images carry)."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    params: dict[str, str] = {}
    if len(_RE_PARAM.findall(last)) >= 3:  # the settings line has at least Steps, Sampler, CFG scale ...
        lines = lines[:-1]
        for key, value in _RE_PARAM.findall(last):
            params[key.strip()] = _unquote(value)
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    out = GenerationParameters(prompt="\n".join(prompt_lines).strip(), negative_prompt="\n".join(negative_lines).strip())

    def take(key: str) -> str | None:
        return params.pop(key, None)

    if (v := take("Steps")) is not None:
        out.steps = int(v)
    if (v := take("Sampler")) is not None:
        out.sampler = v
    if (v := take("CFG scale")) is not None:
        out.cfg_scale = float(v)
    if (v := take("Seed")) is not None:
        out.seed = int(v)
    if (v := take("Size")) is not None and (m := _RE_SIZE.match(v)):
        out.width, out.height = int(m.group(1)), int(m.group(2))
    out.model_hash = take("Model hash")
    out.model = take("Model")
    if (v := take("Clip skip")) is not None:
        out.clip_skip = int(v)
    if (v := take("Denoising strength")) is not None:
        out.denoising_strength = float(v)
    for key, hashes in (("Lora hashes", out.lora_hashes), ("TI hashes", out.ti_hashes)):
        for part in (take(key) or "").split(","):
            if ":" in part:
                name, h = part.rsplit(":", 1)
                hashes[name.strip()] = h.strip()
    out.version = take("Version") or ""
    out.extra = params
    return out


# ---------------------------------------------------------------------------------------------------------------------
# PNG files


def write_png(image, path: str | Path, parameters_text: str, extra: dict[str, str] | None = None) -> Path:
    """Save `image` (PIL) as PNG with the A1111 'parameters' text chunk (iTXt when the text is not Latin-1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=_png_info(parameters_text, extra))
    return path


def encode_png(image, parameters_text: str) -> bytes:
    """The PNG bytes `write_png` would write (what the HTTP API stores and serves)."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_png_info(parameters_text, None))
    return buffer.getvalue()


def _png_info(parameters_text: str, extra: dict[str, str] | None):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    try:
        parameters_text.encode("latin-1")
        info.add_text(PARAMETERS_KEY, parameters_text)
    except UnicodeEncodeError:
        info.add_itxt(PARAMETERS_KEY, parameters_text)
    for key, value in (extra or {}).items():
        info.add_itxt(key, value)
    return info


def read_png_parameters(path: str | Path) -> str | None:
    """The 'parameters' text of a PNG (None when it has none)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        text = im.text.get(PARAMETERS_KEY) if hasattr(im, "text") else None
        return text if text is not None else im.info.get(PARAMETERS_KEY)


def sidecar_path(png_path: str | Path) -> Path:
    return Path(png_path).with_suffix(".json")


def write_sidecar(png_path: str | Path, data: dict[str, Any]) -> Path:
    """Write `<image>.json` beside the PNG: the model and version ids used, parameters, timings (UTF-8, sorted)."""
    path = sidecar_path(png_path)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path
