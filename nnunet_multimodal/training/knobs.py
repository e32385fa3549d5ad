"""Method architecture knobs stored in the plans under ``configurations[c]["multimodal"][<section>]``."""

from __future__ import annotations

from copy import deepcopy

PLANS_KEY = "multimodal"


def read_knobs(configuration: dict, section: str | None, defaults: dict) -> dict:
    """The knobs of one method section merged over its documented defaults.

    Each method owns one section, so one plans file can carry the knobs of several methods; within its own
    section a method rejects unknown names, so a typo fails loudly instead of being silently ignored."""
    if section is None:
        return {}
    given = knobs_in_plans(configuration, section)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown knob(s) {unknown} in the plans under configurations[...]['{PLANS_KEY}']['{section}']. "
            f"Known knobs and their defaults: {defaults}. Fix the plans file (or `nnunet-mm plans --set`)."
        )
    merged = deepcopy(defaults)
    merged.update(deepcopy(given))
    return merged


def knobs_in_plans(configuration: dict, section: str) -> dict:
    """The knobs a configuration's plans set in one method section, without defaults."""
    return (configuration.get(PLANS_KEY) or {}).get(section) or {}


def with_knobs(configuration: dict, section: str, knobs: dict) -> dict:
    """A copy of the configuration whose method section also sets ``knobs``."""
    configuration = deepcopy(configuration)
    configuration[PLANS_KEY] = {**(configuration.get(PLANS_KEY) or {}),
                                section: {**knobs_in_plans(configuration, section), **knobs}}
    return configuration
