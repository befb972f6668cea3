"""``outlast.platforms.local_lambda``'s reading of a template, and Lambda's recursion rule."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from outlast.platforms.local_lambda import (
    InvokeReport,
    LocalLambda,
    Pending,
    Template,
)

ROOT = Path(__file__).resolve().parents[2]

LOOPY = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting: {Type: String, Default: hello}
Conditions:
  Loud: !Equals [!Ref Greeting, HELLO]
Globals:
  Function:
    Runtime: python3.13
    Timeout: 7
    Environment:
      Variables:
        SAID: !Sub "${Greeting} from ${AWS::StackName} in ${AWS::Region}"
Resources:
  Looper:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${AWS::StackName}-looper"
      CodeUri: code/
      Handler: app.handler
      Environment:
        Variables:
          LOUD: !If [Loud, "yes", !Ref AWS::NoValue]
          ME: !GetAtt Looper.Arn
  Allowed:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: app.handler
      RecursiveLoop: Allow
      AutoPublishAlias: live
"""


def test_the_repository_template_resolves_for_local_runs() -> None:
    template = Template(ROOT / "template.yaml", stack_name="outlast")
    agent = template.function("AgentFunction", build_dir=Path("/nonexistent"))
    assert agent.handler == "outlast.platforms.lambda_entry.agent"
    assert agent.code_dir == (ROOT / "examples").resolve()
    assert agent.env["OUTLAST_APP"] == "research_agent:app"
    assert agent.env["OUTLAST_AGENT_FUNCTION"] == "outlast-agent:live"
    assert (agent.version, agent.alias, agent.recursive_loop_allowed) == ("1", "live", True)
    assert "OUTLAST_BEDROCK_MODEL_ID" not in agent.env  # ModelProvider=none
    api = template.function("ApiFunction", build_dir=Path("/nonexistent"))
    assert api.env["OUTLAST_AGENT_VERSION_ARN"].endswith(":function:outlast-agent:1")
    bedrock = Template(
        ROOT / "template.yaml",
        overrides={"ModelProvider": "bedrock", "BedrockModelId": "m.x-v1:0"},
    ).function("AgentFunction", build_dir=Path("/nonexistent"))
    assert bedrock.env["OUTLAST_BEDROCK_MODEL_ID"] == "m.x-v1:0"


def test_a_self_invoking_chain_stops_after_16_hops_without_recursive_loop_allow(
    tmp_path: Path,
) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "template.yaml").write_text(LOOPY, encoding="utf-8")
    template = Template(tmp_path / "template.yaml", stack_name="demo", region="eu-west-1")
    looper = template.function("Looper")
    assert looper.name == "demo-looper" and looper.timeout == 7
    assert looper.env["SAID"] == "hello from demo in eu-west-1"
    assert "LOUD" not in looper.env
    assert looper.env["ME"] == "arn:aws:lambda:eu-west-1:123456789012:function:demo-looper"
    assert not looper.recursive_loop_allowed
    allowed = template.function("Allowed")
    assert allowed.recursive_loop_allowed and allowed.version == "1"

    for fn, limit in ((looper, 16), (allowed, None)):
        local = LocalLambda(template, work_dir=tmp_path / ".outlast")
        report = InvokeReport()
        callers = {}
        caller = "first"
        local._depth[caller] = 0
        callers[caller] = fn
        queue: deque[Pending] = deque()
        for hop in range(1, 25):
            local._enqueue_invokes(queue, [(caller, fn.name, {"hop": hop})], callers, report)
            if not queue:
                break
            item = queue.popleft()
            caller = f"req-{hop}"
            local._depth[caller] = item.depth
            callers[caller] = fn
        if limit is None:
            assert report.dropped_recursion == 0 and hop == 24
        else:
            assert report.dropped_recursion == 1 and hop == limit + 1
