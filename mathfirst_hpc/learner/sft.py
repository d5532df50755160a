"""Stage 1 cold-start SFT objective and collation.

Loss: next-token cross-entropy on the assistant tokens only (the solution and its closing ``<|im_end|>``),
averaged over every assistant token of the optimizer step (all micro-batches, all DP ranks): gradient
accumulation therefore gives the same gradient as one large batch. Rows are right-padded, or packed: several
examples share a row, with positions restarting per example and a block-diagonal causal mask so that no example
attends to another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..data.base import Problem
from .base import LossFn, TokenBatch


@dataclass
class SftExample:
    input_ids: list[int]
    loss_mask: list[int]
    """1 on assistant tokens."""


def tokenize_example(tokenizer: PreTrainedTokenizerBase, problem: Problem, max_len: int) -> SftExample:
    """Prompt (chat template, generation header) + solution + EOS; loss on the solution part."""
    prompt = tokenizer.apply_chat_template(problem.prompt, add_generation_prompt=True, tokenize=True)
    if hasattr(prompt, "keys"):
        prompt = prompt["input_ids"]
    answer = tokenizer(problem.solution or "", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (list(prompt) + answer)[:max_len]
    mask = ([0] * len(prompt) + [1] * len(answer))[:max_len]
    return SftExample(ids, mask)


def collate_padded(examples: list[SftExample], pad_id: int) -> TokenBatch:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        attention[row, :n] = 1
        mask[row, :n] = torch.tensor(ex.loss_mask)
    return TokenBatch(input_ids=ids, attention_mask=attention, loss_mask=mask)


def collate_packed(examples: list[SftExample], pad_id: int, row_len: int) -> TokenBatch:
    """Greedy first-fit packing into rows of ``row_len`` tokens with block-diagonal causal masks."""
    rows: list[list[SftExample]] = []
    for ex in examples:
        for row in rows:
            if sum(len(e.input_ids) for e in row) + len(ex.input_ids) <= row_len:
                row.append(ex)
                break
        else:
            rows.append([ex])
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for s, ex in enumerate(row):
            n = len(ex.input_ids)
            ids[r, offset:offset + n] = torch.tensor(ex.input_ids)
            mask[r, offset:offset + n] = torch.tensor(ex.loss_mask)
            positions[r, offset:offset + n] = torch.arange(n)
            segment[r, offset:offset + n] = s
            offset += n
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
    attention = (same & causal)[:, None]
    # padding rows attend to themselves only, so softmax never sees an all-masked row
    attention = attention | torch.eye(width, dtype=torch.bool)[None, None]
    return TokenBatch(input_ids=ids, attention_mask=attention, loss_mask=mask, position_ids=positions)


def make_sft_loss(global_tokens: float) -> LossFn:
    def loss_fn(logp: torch.Tensor, entropy: torch.Tensor, batch: TokenBatch):
        mask = batch.loss_mask.to(logp.dtype)
        loss = -(logp * mask).sum() / global_tokens
        return loss, {"loss": float(loss.detach()), "entropy": float((entropy.detach() * mask).sum() / global_tokens)}
    return loss_fn
