"""What Civitai's model types and base models mean to the zoo: roles, adapter types and base-model families."""

from __future__ import annotations

CHECKPOINT_TYPES = frozenset({"Checkpoint"})
# Types the zoo serves as adapters on top of a checkpoint.
ADAPTER_TYPES = frozenset({"LORA", "LoCon", "DoRA", "LyCORIS", "TextualInversion", "Hypernetwork"})
# The listing the crawler asks for by default: everything the zoo serves.
SERVED_TYPES = ("Checkpoint", "LORA", "LoCon", "DoRA", "TextualInversion")

_ROLE_BY_TYPE = {
    "Checkpoint": "checkpoint",
    "LORA": "lora",
    "LoCon": "lora",
    "DoRA": "lora",
    "LyCORIS": "lora",
    "TextualInversion": "embedding",
    "Hypernetwork": "hypernetwork",
    "VAE": "vae",
}

_SDXL_ARCHITECTURE = ("Pony", "Illustrious", "NoobAI")


def types_by_role() -> dict[str, list[str]]:
    """Model types that can fill each role an image names (for resolving references by file name)."""
    roles: dict[str, list[str]] = {}
    for model_type, role in _ROLE_BY_TYPE.items():
        if role != "vae":
            roles.setdefault(role, []).append(model_type)
    return roles


def role_of_type(model_type: str) -> str:
    """The role a model of this type plays in an image's generation (checkpoint, lora, embedding, ...)."""
    return _ROLE_BY_TYPE.get(model_type, "other")


def base_model_family(base_model: str | None) -> str:
    """The architecture family of a Civitai `baseModel`: adapters and checkpoints of one family are compatible.

    Pony, Illustrious and NoobAI are SDXL-architecture (AIR ecosystem `sdxl`); Pony V7 is not (AuraFlow).
    Unknown values are their own family, so they only match themselves.
    """
    if not base_model or not base_model.strip():
        return "unknown"
    name = base_model.strip()
    if name.startswith("SD 1."):
        return "SD1.x"
    if name.startswith("SD 2."):
        return "SD2.x"
    if name.startswith("SDXL") or name in _SDXL_ARCHITECTURE:
        return "SDXL"
    if name.startswith("SD 3"):
        return "SD3"
    if name.startswith("Flux.1"):
        return "Flux.1"
    if name.startswith("Flux.2"):
        return "Flux.2"
    if name == "Pony V7":
        return "AuraFlow"
    return name
