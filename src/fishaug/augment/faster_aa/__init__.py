"""Faster AutoAugment (Hataya et al., 2020): differentiable policy search and its export.

``operations`` and ``functional`` hold the differentiable image operations, ``policy`` the
sub-policies, ``module`` the search LightningModule, ``export`` the Albumentations files and
summaries, ``policy_file`` the loading (and conversion) of policy files, and ``search`` the
work behind ``python search.py``. The package imports none of them, so that loading a policy
for training does not import the search.
"""
