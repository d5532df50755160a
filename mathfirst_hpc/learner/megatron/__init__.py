"""Megatron-core learner backend (TP/PP/DP): ``backend.MegatronBackend``; HF <-> Megatron weight conversion in
``convert.py``; vocab-parallel log-probs in ``logprobs.py``; the GPTModel for an HF config in ``model.py``.

Importing this package does not import megatron-core; import ``mathfirst_hpc.learner.megatron.backend`` for that.
"""
