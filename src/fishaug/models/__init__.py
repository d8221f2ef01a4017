"""Backbones and the classification LightningModule."""
