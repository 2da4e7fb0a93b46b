"""beta_lasso: learning convolutions from scratch with beta-LASSO (JAX/Flax)."""
