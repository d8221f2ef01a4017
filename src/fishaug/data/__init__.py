"""Data sources, manifests, split schemes, transforms and the LightningDataModule."""
