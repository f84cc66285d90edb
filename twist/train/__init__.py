"""twist.train: the TWIST training recipe (Hassid et al. 2023, §3.2 and appendix A.1).

In the order a run uses them:

* :mod:`twist.train.config` - every setting of ``twist-train``, one dataclass per config group;
* :mod:`twist.train.data` - the seeded, rank-sharded, resumable stream over a unit dataset;
* :mod:`twist.train.packing` - utterances -> document-masked packed windows (or padded rows), the loss;
* :mod:`twist.train.attention` - document masks as flex-attention BlockMasks, the backend choice;
* :mod:`twist.train.parallelize` - build the speech LM for a run and lay it out: meta device,
  activation checkpointing, compile, DDP / FSDP2;
* :mod:`twist.train.optim`, :mod:`twist.train.schedule` - AdamW; inverse-sqrt and cosine schedules;
* :mod:`twist.train.step` - forward + loss (compiled once per kind) and the guarded update;
* :mod:`twist.train.checkpointer` - save, resume and export, full and sharded, for every strategy;
* :mod:`twist.train.trainer` - :class:`~twist.train.trainer.Trainer`: the recipe itself;
* :mod:`twist.train.signals` - stop signals (process groups and collectives: :mod:`twist.dist`);
* :mod:`twist.train.loggers` - JSONL / TensorBoard / wandb metrics, tokens/s and MFU;
* :mod:`twist.train.plot` - valid PPL against steps for several runs (paper Fig. 2b).

Submodules are imported on use, so ``import twist.train`` stays cheap.
"""
