"""Masked-LM (continued) pretraining with transformers.Trainer, SIFT on: the shape of transformers'
``examples/pytorch/language-modeling/run_mlm.py``, with one changed line (``SiftTrainer(..., sift_args=...)``).

CPU smoke run (about a minute) on the bundled corpus with a micro BERT::

    python examples/run_mlm_sift.py --train_file ../shared/data/wikitext-2/valid.txt \\
        --tokenizer_name ../shared/data/bert-base-uncased --model_type bert \\
        --config_overrides hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=256 \\
        --max_seq_length 64 --per_device_train_batch_size 16 --max_steps 60 --output_dir /tmp/mlm_sift \\
        --keep 0.5 --exit_layer 1 --use_cpu --report_to none

``accelerate launch`` / ``torchrun --nproc_per_node N`` / ``--deepspeed ds_config.json`` work as for run_mlm.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import transformers
from transformers import AutoConfig, DataCollatorForLanguageModeling, HfArgumentParser, TrainingArguments

from sift_fast.data.tokenizer import hf_tokenizer
from sift_fast.distributed.launch import shutdown
from sift_fast.errors import ConfigError, DataError, UserError
from sift_fast.hf import SiftArguments, SiftTrainer


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "local HF masked-LM directory to start "
                                                                   "from (from_pretrained); none: a new model"})
    model_type: str = field(default="bert", metadata={"help": "new model: bert / bert-pretraining / roberta"})
    config_overrides: str | None = field(default=None, metadata={"help": "new model: k=v,... over the default "
                                                                 "config (hidden_size=64,num_hidden_layers=2)"})
    tokenizer_name: str = field(default="bundled", metadata={"help": "tokenizer: a directory (tokenizer.json or "
                                                            "vocab.txt), a file, 'bundled' or a hub name"})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "HF dataset name (datasets.load_dataset)"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "its configuration"})
    train_file: str | None = field(default=None, metadata={"help": "a text file, one document / line"})
    validation_file: str | None = field(default=None, metadata={"help": "validation text file"})
    validation_split_percentage: int = field(default=5, metadata={"help": "held out of train when no validation"})
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    max_seq_length: int = field(default=128, metadata={"help": "sequence length"})
    line_by_line: bool = field(default=False, metadata={"help": "one padded sequence per line (else packed)"})
    mlm_probability: float = field(default=0.15, metadata={"help": "masking rate"})
    max_train_samples: int | None = field(default=None, metadata={"help": "cap on training sequences"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "cap on validation sequences"})


def load_raw(data: DataTrainingArguments):
    import datasets

    if data.dataset_name:
        try:
            raw = datasets.load_dataset(data.dataset_name, data.dataset_config_name)
        except Exception as exc:  # network, unknown name
            raise DataError(f"--dataset_name {data.dataset_name}: cannot load ({str(exc).splitlines()[0]})") from None
    elif data.train_file:
        files = {"train": data.train_file, **({"validation": data.validation_file} if data.validation_file else {})}
        for flag, path in (("--train_file", data.train_file), ("--validation_file", data.validation_file)):
            if path and not Path(path).is_file():
                raise DataError(f"{flag}: file not found: {path}")
        raw = datasets.load_dataset("text", data_files=files)
    else:
        raise ConfigError("give --train_file or --dataset_name")
    if "validation" not in raw:  # hold out the first validation_split_percentage % (as run_mlm.py)
        train = raw["train"]
        cut = max(1, len(train) * data.validation_split_percentage // 100)
        raw = datasets.DatasetDict({"validation": train.select(range(cut)),
                                    "train": train.select(range(cut, len(train)))})
    return raw


def tokenized(raw, tok, data: DataTrainingArguments):
    col = data.text_column
    if col not in raw["train"].column_names:
        raise DataError(f"--text_column {col}: not a column of the dataset ({', '.join(raw['train'].column_names)})")
    raw = raw.filter(lambda ex: bool(ex[col] and ex[col].strip()))
    n = data.max_seq_length
    if data.line_by_line:
        fn = lambda ex: tok(ex[col], truncation=True, max_length=n, return_special_tokens_mask=True)
        return raw.map(fn, batched=True, remove_columns=raw["train"].column_names)
    enc = raw.map(lambda ex: tok(ex[col], return_special_tokens_mask=True), batched=True,
                  remove_columns=raw["train"].column_names)

    def group(ex):  # run_mlm.py's packing: concatenate, cut into max_seq_length blocks
        cat = {k: list(chain(*ex[k])) for k in ex}
        total = len(cat["input_ids"]) // n * n
        return {k: [v[i:i + n] for i in range(0, total, n)] for k, v in cat.items()}

    return enc.map(group, batched=True)


def build_model(margs: ModelArguments, tok):
    if margs.model_name_or_path:
        if not Path(margs.model_name_or_path).is_dir():
            raise ConfigError(f"--model_name_or_path {margs.model_name_or_path}: not a local model directory")
        cfg = AutoConfig.from_pretrained(margs.model_name_or_path)
        pretraining = "BertForPreTraining" in (cfg.architectures or [])
        cls = transformers.BertForPreTraining if pretraining else transformers.AutoModelForMaskedLM
        return cls.from_pretrained(margs.model_name_or_path)
    kind = {"bert": "bert", "bert-pretraining": "bert", "roberta": "roberta"}.get(margs.model_type)
    if kind is None:
        raise ConfigError(f"--model_type must be bert, bert-pretraining or roberta; got {margs.model_type!r}")
    cfg = AutoConfig.for_model(kind, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if margs.config_overrides:
        try:
            cfg.update_from_string(margs.config_overrides)
        except ValueError as exc:
            raise ConfigError(f"--config_overrides: {exc}") from None
    if kind == "roberta":
        cfg.max_position_embeddings = max(cfg.max_position_embeddings, 514)
    if margs.model_type == "bert-pretraining":
        return transformers.BertForPreTraining(cfg)
    return transformers.AutoModelForMaskedLM.from_config(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments, SiftArguments))
    try:
        argv = sys.argv[1:] if argv is None else argv
        try:
            if len(argv) == 1 and argv[0].endswith(".json"):
                margs, data, targs, sift = parser.parse_json_file(json_file=argv[0])
            else:
                margs, data, targs, sift = parser.parse_args_into_dataclasses(args=argv)
        except UserError:
            raise
        except ValueError as exc:  # TrainingArguments' own checks
            raise ConfigError(str(exc).strip().splitlines()[0]) from None
        tok = hf_tokenizer(margs.tokenizer_name)
        ds = tokenized(load_raw(data), tok, data)
        train, valid = ds["train"], ds["validation"]
        if data.max_train_samples:
            train = train.select(range(min(len(train), data.max_train_samples)))
        if data.max_eval_samples:
            valid = valid.select(range(min(len(valid), data.max_eval_samples)))
        transformers.set_seed(targs.seed)  # as run_mlm.py: the model's initial weights follow --seed
        model = build_model(margs, tok)
        collator = DataCollatorForLanguageModeling(tok, mlm_probability=data.mlm_probability,
                                                   pad_to_multiple_of=8 if data.line_by_line else None)
        trainer = SiftTrainer(model=model, args=targs, train_dataset=train,
                              eval_dataset=valid, processing_class=tok, data_collator=collator,
                              sift_args=sift)  # the one changed line: Trainer(...) -> SiftTrainer(..., sift_args=)
        resume = targs.resume_from_checkpoint
        resume = True if resume in ("last", "true", "True") else resume  # "last": the newest complete checkpoint
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        del trainer, model  # before shutdown(): nothing holding gloo/NCCL work survives to interpreter exit
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shutdown()  # under torchrun / accelerate launch: the ranks leave the process group together
    return 0


if __name__ == "__main__":
    sys.exit(main())
