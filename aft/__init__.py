"""The `aft` command (aft/cli.py): serve AFT models (app/) and train them (training/)."""
