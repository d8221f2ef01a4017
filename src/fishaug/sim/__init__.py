"""A simulated fish counter: species looks, recording conditions and video rendering.

``simulate_counter`` writes videos plus ground-truth boxes in the CSV annotation format of
``fishaug.ingest``; ``sim_source`` (``dataset=sim``) sends them through ``prepare`` and returns
the manifest.
"""

from fishaug.sim.render import simulate_counter
from fishaug.sim.source import sim_source
from fishaug.sim.species import SPECIES, FishSprite, SpeciesLook

__all__ = ["SPECIES", "FishSprite", "SpeciesLook", "sim_source", "simulate_counter"]
