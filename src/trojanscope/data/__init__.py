"""Data: dataset registry and loaders, triggers and poisoners."""

from trojanscope.data.datasets import ENV_VAR, REGISTRY, TextDataset, data_dir, load_dataset, read_table
from trojanscope.data.poison import (
    Inserted,
    PoisonConfig,
    PoisonedDataset,
    check_trigger,
    insert_trigger,
    poison_dataset,
    poisoned_test_set,
    trigger_frequency,
)

__all__ = [
    "ENV_VAR", "REGISTRY", "TextDataset", "data_dir", "load_dataset", "read_table",
    "Inserted", "PoisonConfig", "PoisonedDataset", "check_trigger",
    "insert_trigger", "poison_dataset", "poisoned_test_set", "trigger_frequency",
]
