"""Synthetic training images from Stable Diffusion fine-tuned on the fish data.

The steps, each behind ``python synth.py step=<name>``: ``prepare`` (fine-tuning set),
``lora`` and ``dreambooth`` (fine-tuning), ``merge``, ``grid`` (pick a checkpoint),
``generate``, ``filter``, and ``tiny_model`` (a small random model for tests and the demo).
Every step reads and writes plain folders, so each can be re-run or entered with one's own files.

Importing this package is cheap: the modules that need diffusers import it themselves.
"""
