"""Dagster assets, one module per stage; each calls one eexit_core function."""
