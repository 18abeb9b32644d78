"""`arbiter import`: reward models trained elsewhere (transformers, TRL, OpenRLHF, PEFT) into bundles."""
