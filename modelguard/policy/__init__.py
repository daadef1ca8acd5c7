"""Query policies (the ``policy`` config group): how the attacker picks the images it sends
to the defended API. The contract is in :mod:`modelguard.policy.base`."""
