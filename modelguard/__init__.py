"""modelguard: experiments on model-extraction attacks and the defenses against them."""

__version__ = "0.1.0"
