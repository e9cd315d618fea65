"""Training side of AFT: data, fine-tuning, export, evaluation (and tiny local models).

The modules form a DAG, leaves first: `tasks` (problems and scoring), `rows`, `config`,
`engine`, `results`, `tiny`, `rewards`; `data`, `rl_data`, `export`, `stop`, `trainer_setup`;
`grpo` (training by reward), `train`, `evaluate`, `data_cli`, `compare`; `toy_rl`, then `toy`,
the recipe on top (tests/training/test_imports.py keeps it so). They import each
other at the top of the file; torch, transformers' models, TRL's trainer, peft, datasets,
vllm and matplotlib are imported inside the functions that use them, so that a command's
--help and `aft serve` start without them.
"""
