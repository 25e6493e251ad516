"""Whether this server can generate and edit, decided at start-up so generate/edit answer a documented 503 with the
reason instead of failing job after job: the studio switched off (ZOO_STUDIO=off, search-only replicas), the model
stack not installed (the `models` extra: torch, diffusers, transformers, peft, safetensors, open_clip), or the SD
1.5 component configs not writable under ZOO_HOME. Checkpoint and LoRA weights are fetched per job (a failed
download fails that job with the reason)."""

from __future__ import annotations

import importlib.util

from config import Settings

MODEL_STACK = ("torch", "diffusers", "transformers", "peft", "safetensors", "open_clip")


def studio_problem(settings: Settings, *, config_dir_check: bool = True) -> str | None:
    """Why the studio cannot run here, or None when it can."""
    if not settings.studio:
        return "generation is switched off on this server (ZOO_STUDIO=off)"
    missing = [name for name in MODEL_STACK if importlib.util.find_spec(name) is None]
    if missing:
        return f"the model stack is not installed here ({', '.join(missing)} missing): pip install 'zoo[models]'"
    if config_dir_check:
        try:
            from serving.studio.sd_components import default_config_dir

            default_config_dir(settings.zoo_home)
        except Exception as error:  # noqa: BLE001 - any failure to write the configs means the studio cannot run
            return f"the SD 1.5 configs cannot be written under ZOO_HOME ({type(error).__name__}: {error})"
    return None
