"""Command-line entry points of depo_trl: ``depo_trl.scripts.depo`` trains from a YAML recipe."""
