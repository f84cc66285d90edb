"""twist: Textually Warm-started Speech Language Models (after Hassid et al., 2023).

Stages, one module each, connected only through files on disk:

    twist.tokenizer  audio -> discrete units (encoder + k-means)      twist-tokenize
    twist.units      the unit dataset on disk (shards + manifest)
    twist.lm         text LM -> speech LM (warm or cold start)
    twist.train      the training recipe                               twist-train
    twist.eval       likelihood benchmarks and PPL                     twist-eval
    twist.vocoder    unit HiFi-GAN with duration predictor             twist-vocoder
    twist.generate   prompt continuation                               twist-generate
    twist.bench      spoken benchmarks built with offline TTS          twist-bench
"""

__version__ = "0.1.0"
