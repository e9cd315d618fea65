"""Training side of AFT: data, fine-tuning, export, evaluation (and tiny local models)."""
