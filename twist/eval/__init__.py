"""twist.eval: zero-shot evaluation of speech LMs (TWIST, Hassid et al., 2023, §3.3).

* :class:`LikelihoodScorer` - batched, length-sorted, masked sequence log-likelihoods
  (sum and per-token mean) under the model's unit contract (:mod:`twist.eval.likelihood`);
* :func:`decide` - pair decisions, ties worth 0.5 as in the ZeroSpeech toolkit (:mod:`twist.eval.pairs`);
* :mod:`twist.eval.registry` - the benchmarks, one row each (settings, planner, runner, columns);
* :mod:`twist.eval.pair_scoring` - units, likelihoods, rules and aggregates of a pair benchmark;
* :mod:`twist.eval.zr2021` - sWUGGY / sBLIMP in the ZeroSpeech 2021 layout, official aggregation,
  submission files;
* :mod:`twist.eval.storycloze` - sStoryCloze / tStoryCloze (released layout, ``pairs.jsonl``);
* :mod:`twist.eval.ppl` - speech-token perplexity on a unit dataset split;
* :mod:`twist.eval.inputs` - audio -> units with the tokenizer, cached by content; pre-tokenized units;
* :mod:`twist.eval.rules` - the sum, mean and length-only decision rules and per-item scores;
* :mod:`twist.eval.stats` - 95 % Wilson intervals and the exact paired sign test between runs;
* :mod:`twist.eval.report` - results.json, markdown, per-item files, model comparison table;
* :func:`evaluate_model` - all of the above for one model; :func:`~twist.eval.evaluate.evaluate_run`
  is what ``twist-eval`` runs.
"""

from twist.eval.evaluate import evaluate_model, plan_tasks
from twist.eval.likelihood import LikelihoodScorer, Scores
from twist.eval.pairs import Pair, accuracy, decide

__all__ = ["LikelihoodScorer", "Pair", "Scores", "accuracy", "decide", "evaluate_model", "plan_tasks"]
