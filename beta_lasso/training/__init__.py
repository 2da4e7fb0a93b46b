"""The training machinery around `beta_lasso.train`: the device loop, sharding,
checkpoints and workdirs, pre-run checks, model selection and metric writers."""
