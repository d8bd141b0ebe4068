"""Client-level differential privacy of the shared uploads: the mechanism each client applies
(:mod:`fedsim.privacy.mechanism`) and the privacy budget the server accounts
(:mod:`fedsim.privacy.accounting`)."""

from fedsim.privacy.accounting import ClientAccountant, budget, epsilon
from fedsim.privacy.mechanism import GaussianMechanism, add_noise, clip

__all__ = ["ClientAccountant", "GaussianMechanism", "add_noise", "budget", "clip", "epsilon"]
