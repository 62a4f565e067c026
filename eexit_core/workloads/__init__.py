"""Workloads: prompt sets rendered offline from the packages that ship them."""
