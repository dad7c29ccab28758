"""LoRAs: the catalog (torch-free, shared with the bot), their weights, and per-row application.

``catalog`` names the files and their families; ``weights`` reads one file into low-rank
factors through diffusers' own converters; ``bank`` keeps them loaded and adds each row's
updates inside one denoiser call; ``apply`` is where the loop calls in. Nothing here is
imported by this package itself, so the bot can read the catalog without loading torch.
"""
