"""twist.train: the TWIST training recipe (Hassid et al. 2023, §3.2 and appendix A.1).

In the order a run uses them (the model at run time, its attention, masks, batches and
packing, is :mod:`twist.lm`'s: :mod:`twist.lm.attention`, :mod:`twist.lm.packing`):

* :mod:`twist.train.config` - every setting of ``twist-train``, one dataclass per config group;
* :mod:`twist.train.data` - the seeded, rank-sharded, resumable stream over a unit dataset;
* :mod:`twist.train.parallelize` - the strategy object (one process, DDP, FSDP2): wrapping,
  compile, gradient sync, model and optimiser state; and the speech LM built for a run;
* :mod:`twist.train.optim`, :mod:`twist.train.schedule` - AdamW; inverse-sqrt and cosine schedules;
* :mod:`twist.train.step` - forward + loss (compiled once per kind), the guarded update, perplexity;
* :mod:`twist.train.checkpointer` - save, resume (its checks and restores) and export, full and sharded;
* :mod:`twist.train.trainer` - :class:`~twist.train.trainer.Trainer`: the loop, the same for every strategy;
* :mod:`twist.train.signals` - why the loop stops: budgets and stop signals;
* :mod:`twist.train.loggers` - JSONL / TensorBoard / wandb metrics, the progress bar, tokens/s and MFU;
* :mod:`twist.train.plot` - valid PPL against steps for several runs (paper Fig. 2b).

Processes (rank, world size, the process group, collectives) are :mod:`twist.dist`.
Submodules are imported on use, so ``import twist.train`` stays cheap.
"""
