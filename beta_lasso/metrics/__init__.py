"""Measures of a trained network as pure functions of arrays: locality and MDL."""
