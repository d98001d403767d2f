"""What ``--resume`` may change: checked against the checkpoint before anything is written.

A checkpoint was made with one configuration. Options in the config class's
``resume_may_change`` (run length, learning rates and their schedule, intervals, logging, device,
loader workers) may take new values on resume; the loop applies them from the resumed step on
(learning rates: each optimiser's base rate is set from the new config after its state is
loaded). Any other change (architecture, data, losses, seed, ...) would make the checkpoint
describe another run, so it is refused, naming the option, its old and its new value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from img2img.training.config import ConfigError, TrainConfig, config_to_dict


def check_resume_changes(config: TrainConfig, saved: Mapping[str, Any], *, source: str) -> None:
    """Raise ConfigError when ``config`` changes an option ``saved`` (the checkpoint's config) fixed.

    ``source`` names the checkpoint in the message. Keys the checkpoint does not hold (options added
    to img2img after it was written) are not compared.
    """
    allowed = type(config).resume_may_change
    changed = [
        (key, saved[key], value)
        for key, value in config_to_dict(config).items()
        if key not in allowed and key in saved and saved[key] != value
    ]
    if changed:
        key, old, new = changed[0]
        more = f" (and {', '.join(k for k, _, _ in changed[1:])})" if len(changed) > 1 else ""
        raise ConfigError(
            f"--resume cannot change {key}{more}: the checkpoint {source} was trained with {key}={old!r}, "
            f"this command asks for {key}={new!r}; a resume may change only: {', '.join(sorted(allowed))}"
        )
