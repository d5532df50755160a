"""``mathfirst-hpc reward check|score``: score responses with the six-domain verifiers."""

from __future__ import annotations

import json

import click


def _reward_config(sandbox_url: str | None, judge_backend: str, judge_model: str | None, judge_url: str | None):
    from ..config import JudgeConfig, RewardConfig, SandboxClientConfig
    if judge_backend == "openai" and not judge_url:
        raise click.UsageError("--judge-backend openai needs --judge-url http://host:port")
    return RewardConfig(sandbox=SandboxClientConfig(url=sandbox_url),
                        judge=JudgeConfig(backend=judge_backend, model_path=judge_model,  # type: ignore[arg-type]
                                          url=judge_url))


_sandbox_option = click.option("--sandbox-url", default=None, help="http://host:port of a running sandbox server "
                               "(needed for code).")
_judge_backend_option = click.option("--judge-backend", type=click.Choice(["none", "hf", "vllm", "openai"]),
                                     default="none", show_default=True, help="Judge for free-form STEM answers.")
_judge_model_option = click.option("--judge-model", default=None,
                                   help="Local judge model folder (openai: the name the server knows).")
_judge_url_option = click.option("--judge-url", default=None,
                                 help="openai: http://host:port of a running OpenAI-compatible server.")


@click.group()
def reward() -> None:
    """Score responses with the six-domain verifiers."""


@reward.command("check")
@click.option("--domain", "-d", required=True,
              help="math, stem, code, simulation, logic, tabular, or a Guru data_source (math__dapo, ...).")
@click.option("--reference", "-r", required=True, help="The ground truth (code: JSON tests).")
@click.option("--response", "-s", required=True, help="The model response to score.")
@_sandbox_option
@_judge_backend_option
@_judge_model_option
@_judge_url_option
def check(domain: str, reference: str, response: str, sandbox_url: str | None, judge_backend: str,
          judge_model: str | None, judge_url: str | None) -> None:
    """Score one response against a reference; prints {score, verdict, reason}."""
    from ..rewards.bulk import check as check_one

    result = check_one(domain, reference, response, _reward_config(sandbox_url, judge_backend, judge_model,
                                                                    judge_url))
    click.echo(json.dumps({"score": result.score, "verdict": result.verdict, "reason": result.reason}))


@reward.command("score")
@click.argument("in_path", metavar="IN.jsonl", type=click.Path())
@click.argument("out_path", metavar="OUT.jsonl", type=click.Path())
@_sandbox_option
@_judge_backend_option
@_judge_model_option
@_judge_url_option
def score(in_path: str, out_path: str, sandbox_url: str | None, judge_backend: str, judge_model: str | None,
          judge_url: str | None) -> None:
    """Score a JSONL file of rows (data_source, response, reward_model.ground_truth) in bulk."""
    from ..rewards.bulk import score_jsonl

    summary = score_jsonl(in_path, out_path, _reward_config(sandbox_url, judge_backend, judge_model, judge_url))
    click.echo(json.dumps(summary))
