"""Membership plans per federation, inherited down the tree (amount, period, reduced
rates, grace, the split of dues between levels)."""
