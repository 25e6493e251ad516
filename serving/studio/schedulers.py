"""Schedulers by name: the names `zoo generate --scheduler` takes, their diffusers classes and A1111 sampler names."""

from __future__ import annotations

from typing import Any

# name -> (diffusers class, config overrides, A1111 sampler name)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    "dpm++_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    "dpm++_2m_sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        "DPM++ 2M SDE",
    ),
    "dpm++_2m_sde_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M SDE Karras",
    ),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
_SAMPLER_TO_SCHEDULER = {a1111.lower(): name for name, (_, _, a1111) in SCHEDULERS.items()}
_ALIASES = {"dpmpp_2m": "dpm++_2m", "dpmpp_2m_karras": "dpm++_2m_karras", "plms": "pndm", "euler_ancestral": "euler_a"}


def a1111_sampler_name(scheduler: str) -> str:
    """The A1111 'Sampler' string of a scheduler name ('dpm++_2m_karras' -> 'DPM++ 2M Karras')."""
    return SCHEDULERS[normalize_scheduler_name(scheduler)][2]


def scheduler_from_sampler(sampler: str, schedule_type: str | None = None) -> str | None:
    """The scheduler name of an A1111 sampler string (and of its separate 'Schedule type', as newer A1111 writes)."""
    text = sampler.strip().lower()
    if schedule_type and schedule_type.strip().lower() == "karras" and not text.endswith("karras"):
        text += " karras"
    return _SAMPLER_TO_SCHEDULER.get(text)


def normalize_scheduler_name(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in SCHEDULERS:
        return key
    from_a1111 = scheduler_from_sampler(name)
    if from_a1111:
        return from_a1111
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def make_scheduler(name: str, base_config: dict[str, Any]):
    """A fresh scheduler of kind `name` built on the checkpoint's own scheduler config (betas, timestep spacing)."""
    import diffusers

    cls_name, overrides, _ = SCHEDULERS[normalize_scheduler_name(name)]
    return getattr(diffusers, cls_name).from_config(dict(base_config), **overrides)
