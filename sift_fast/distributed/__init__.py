"""Data-parallel training with DeepSpeed (ZeRO 0-3): launch, config derivation, engine, global selection.

``sift-pretrain --deepspeed [--deepspeed_config ds.json]`` under ``deepspeed`` / ``torchrun``; see
docs/distributed.md. Importing this package does not import DeepSpeed.
"""
