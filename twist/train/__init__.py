"""twist.train: the TWIST training recipe (Hassid et al. 2023, §3.2 and appendix A.1).

* :mod:`twist.train.packing` - utterances -> document-masked packed windows (or padded rows), the loss;
* :mod:`twist.train.data` - the seeded, rank-sharded, resumable stream over a unit dataset;
* :mod:`twist.train.schedule` - inverse-sqrt and cosine learning-rate schedules;
* :mod:`twist.train.trainer` - :class:`~twist.train.trainer.Trainer`: steps, validation, checkpoints, export;
* :mod:`twist.train.distributed` - torchrun process groups, DDP and FSDP2 wrapping;
* :mod:`twist.train.loggers` - JSONL / TensorBoard / wandb metrics and MFU;
* :mod:`twist.train.plot` - valid PPL against steps for several runs (paper Fig. 2b).

Submodules are imported on use, so ``import twist.train`` stays cheap.
"""
