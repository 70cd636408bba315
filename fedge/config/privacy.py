"""The differential-privacy settings `fedge server` and `fedge simulate` share, declared
once (see docs/privacy.md for what each protects and how to choose them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedge.config.settings import setting
from fedge.errors import ConfigError

DP_MODES = ("off", "central", "local", "distributed")
PRIVACY = "privacy"  # the docs group of the privacy settings
# Strategies whose aggregate is a (weighted) mean: a noised sum of clipped updates is
# the Gaussian mechanism there. The robust ones pick or sort updates, whose sensitivity
# to one device is not bounded by the clip norm, so central DP refuses them.
MEAN_STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad")


@dataclass(frozen=True)
class PrivacySettings:
    """Differential privacy: where noise is added, how much, and the budget."""

    dp: str = setting("off", "differential privacy: central (the server clips each update "
                      "and noises the sum), local (each device clips and noises its own "
                      "update), distributed (with secure aggregation: each device clips "
                      "and adds its share of the sum's noise before masking) or off",
                      choices=DP_MODES, group=PRIVACY)
    dp_noise_multiplier: float = setting(1.0, "z: the Gaussian noise std is z x the clip "
                                         "norm", low=0, group=PRIVACY)
    dp_clip: float = setting(1.0, "C: each update's L2 norm (its distance from the global "
                             "model) is clipped to C; with adaptive clipping, the first C",
                             low=0, low_open=True, group=PRIVACY)
    dp_adaptive_clip: bool = setting(False, "central only: move C each round toward the "
                                     "target quantile of the update norms (Andrew et al. "
                                     "2021)", group=PRIVACY)
    dp_target_quantile: float = setting(0.5, "adaptive clipping: the share of updates C "
                                        "should leave unclipped", low=0, high=1,
                                        group=PRIVACY)
    dp_clip_lr: float = setting(0.2, "adaptive clipping: the geometric step of C",
                                low=0, low_open=True, group=PRIVACY)
    dp_delta: float | None = setting(None, "the delta epsilon is reported at",
                                     shown="min(1e-5, 1/fleet size)", low=0, high=1,
                                     low_open=True, high_open=True, group=PRIVACY)
    target_epsilon: float = setting(0.0, "end training, committing and shipping the model, "
                                    "before epsilon would exceed this; 0: no budget", low=0,
                                    group=PRIVACY)


def check_privacy(config: Any) -> None:
    """Checks how the privacy settings combine with each other and the strategy; asks for
    dp-accounting when DP is on (a missing package is one line, exit 2)."""
    if config.dp == "off":
        for key, off in (("dp_adaptive_clip", False), ("target_epsilon", 0.0)):
            if getattr(config, key) != off:
                raise ConfigError(f"{key} needs differential privacy on (--dp central or "
                                  "--dp local)")
        return
    from fedge.privacy.accounting import require

    require()
    if config.dp == "central" and config.strategy not in MEAN_STRATEGIES:
        raise ConfigError(f"--dp central adds noise to a mean of clipped updates and "
                          f"cannot protect strategy {config.strategy!r}, which picks or "
                          f"sorts updates; use one of {', '.join(MEAN_STRATEGIES)}, or "
                          "--dp local")
    if config.dp == "central" and getattr(config, "secure_aggregation", False):
        # The server would clip and weigh the one unmasked mean, not each device's update:
        # no device's influence would be bounded by C, and the accounting would be wrong.
        raise ConfigError("--dp central clips each device's update on the server, which "
                          "secure aggregation hides from it; use --dp distributed with "
                          "--secure-aggregation (devices clip and noise before masking)")
    if config.dp == "distributed" and not getattr(config, "secure_aggregation", False):
        # Each device's share is far too little noise for its update alone: only a sum
        # the server cannot take apart carries the target noise.
        raise ConfigError("--dp distributed needs --secure-aggregation: each device adds "
                          "only a share of the noise, which protects nothing unless the "
                          "server sees just the sum; without it use --dp local")
    if config.dp_adaptive_clip and config.dp != "central":
        # Distributed: the clipped count would need the devices' bits, released with
        # noise under secure aggregation (Andrew et al.'s client-side variant): not built.
        raise ConfigError("dp_adaptive_clip applies to --dp central")
    if config.dp_adaptive_clip and config.dp_noise_multiplier <= 0:
        raise ConfigError("dp_adaptive_clip needs dp_noise_multiplier > 0 (the clipped "
                          "count is released with noise too)")
    if config.target_epsilon > 0 and config.dp_noise_multiplier <= 0:
        raise ConfigError("target_epsilon needs dp_noise_multiplier > 0: without noise "
                          "epsilon is infinite")
