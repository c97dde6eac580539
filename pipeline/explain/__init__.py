"""Interpretability: Captum attributions in 2D and 3D, their sanity and faithfulness checks, case
selection, mapping maps back to scan space, and rendering (overlays, montages with orientation letters)."""
