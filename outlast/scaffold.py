"""``outlast init lambda DIR``: a new SAM project around a minimal durable agent.

What it writes (nothing is overwritten unless asked)::

    DIR/template.yaml         agent, API and sweeper functions (the generic Outlast handlers),
                              DynamoDB hot tier, S3 cold tier, dead-letter queue, model parameters
    DIR/samconfig.toml        stack name, build in source, validate with lint, deploy defaults
    DIR/Makefile              sam build's rules: your code as it is, and the Outlast layer
    DIR/layer/requirements.txt  the layer's runtime dependencies (pinned)
    DIR/src/MODULE.py         the agent: a durable function around an agent loop with tools
    DIR/events/start.json     an event that starts a run
    DIR/README.md             the two commands

The layer packs ``outlast`` and ``statestore`` from where they are installed now (the
Makefile's ``OUTLAST_SRC``) and their dependencies as python3.13 manylinux wheels, so ``sam
build`` needs neither Docker nor python3.13.
"""

# ruff: noqa: E501 - the templates below are YAML, whose long lines stay whole

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["ScaffoldError", "scaffold_lambda"]


class ScaffoldError(Exception):
    """The project cannot be written (bad module name, directory not empty)."""


_MODULE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# The pins of the Outlast layer (layers/requirements.txt in the Outlast repository).
LAYER_REQUIREMENTS = """\
# Runtime dependencies of the Outlast layer (boto3 comes with the Lambda runtime).
redis==8.1.0
msgpack==1.2.4
pydantic==2.14.4
zstandard==0.25.0
aws-lambda-powertools==3.37.0
aws-xray-sdk==2.15.0
"""

AGENT = '''\
"""__MODULE__: a minimal durable agent.

Every model call and every tool call is a journaled step: a Lambda timeout or a crash costs at
most the call in flight. The model is the one the environment names (OUTLAST_BEDROCK_MODEL_ID,
or OPENAI_API_KEY with OPENAI_BASE_URL; the template sets them from its parameters); without
one, an offline stand-in answers, and says so.
"""

from __future__ import annotations

from typing import Any

from outlast import App, Context
from outlast.agent import Agent, model_from_env, tool
from outlast.testing.offline_model import Offline

app = App("__MODULE__")

NOTES: dict[str, tuple[str, str]] = {
    "durability": ("Durable runs", "A durable run keeps a journal of completed steps and "
                   "continues from the last one after a timeout, a crash or a deploy."),
    "lambda": ("Runs on Lambda", "On Lambda each invocation is one leg of a run; a leg hands "
               "off to the next before the function's timeout."),
    "versions": ("Versions", "A run keeps the function version it started on for all its legs."),
}


@tool
def search(query: str, limit: int = 3) -> list[dict[str, str]]:
    """Search the notes. Returns ids, titles and snippets, best first."""
    words = {w for w in query.lower().split() if len(w) > 2}
    scored = sorted(
        ((sum(w in (title + " " + text).lower() for w in words), key)
         for key, (title, text) in NOTES.items()),
        reverse=True,
    )
    return [
        {"id": key, "title": NOTES[key][0], "snippet": NOTES[key][1][:80]}
        for score, key in scored[: max(1, limit)]
        if score
    ] or [{"id": key, "title": t, "snippet": x[:80]} for key, (t, x) in NOTES.items()]


@tool
def read(doc_id: str) -> dict[str, str]:
    """Read one note by its id."""
    title, text = NOTES[doc_id]
    return {"id": doc_id, "title": title, "text": text}


@tool
def note(text: str, source: str) -> str:
    """Keep one finding and the id of the note it comes from."""
    return f"noted (from [{source}])"


agent = Agent(
    model_from_env(default=Offline(rounds=2)),
    [search, read, note],
    system="Answer from the notes; cite each claim as [id].",
    max_turns=12,
)


@app.durable()
def ask(ctx: Context, question: str) -> dict[str, Any]:
    """Answer ``question`` from the notes."""
    result = agent.run(ctx, question)
    return {"answer": result.answer, "turns": result.turns, "model": result.model}
'''

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: __MODULE__ on Outlast - durable agent runs on AWS Lambda.

Parameters:
  AppModule:
    Type: String
    Default: __MODULE__:app
    Description: Your app as package.module:app (OUTLAST_APP), importable from AppCodeUri.
  AppCodeUri:
    Type: String
    Default: src/
    Description: Directory with your agent's code.
  LegTimeout:
    Type: Number
    Default: 900
    MinValue: 30
    MaxValue: 900
    Description: Timeout of one leg (the agent function's timeout), in seconds.
  ModelProvider:
    Type: String
    Default: none
    AllowedValues: [none, bedrock, openai]
    Description: bedrock (BedrockModelId), openai (OpenAIBaseUrl, key in OpenAIApiKeySecretArn) or none.
  BedrockModelId:
    Type: String
    Default: ""
    Description: Bedrock model id (ModelProvider=bedrock).
  OpenAIBaseUrl:
    Type: String
    Default: https://api.openai.com/v1
    Description: OpenAI-compatible base URL (ModelProvider=openai).
  OpenAIModel:
    Type: String
    Default: gpt-4o-mini
    Description: Model name at that endpoint (ModelProvider=openai).
  OpenAIApiKeySecretArn:
    Type: String
    Default: ""
    Description: Secrets Manager secret ARN holding the API key (ModelProvider=openai).

Conditions:
  UseBedrock: !Equals [!Ref ModelProvider, bedrock]
  UseOpenAI: !Equals [!Ref ModelProvider, openai]

Globals:
  Function:
    Runtime: python3.13
    Architectures: [x86_64]
    Tracing: Active
    MemorySize: 512
    Layers: [!Ref OutlastLayer]
    Environment:
      Variables:
        OUTLAST_HOT_URL: !Sub "dynamodb://${HotTable}?region=${AWS::Region}"
        OUTLAST_COLD_URL: !Sub "s3://${ColdBucket}/outlast?region=${AWS::Region}"
        OUTLAST_AGENT_FUNCTION: !Sub "${AWS::StackName}-agent:live"
        OUTLAST_HANDOFF_MARGIN: "20"
        POWERTOOLS_METRICS_NAMESPACE: Outlast

Resources:
  HotTable:
    Type: AWS::DynamoDB::Table
    DeletionPolicy: Retain
    UpdateReplacePolicy: Retain
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
        - {AttributeName: due_p, AttributeType: S}
        - {AttributeName: due_at, AttributeType: N}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
      GlobalSecondaryIndexes:
        - IndexName: due
          KeySchema:
            - {AttributeName: due_p, KeyType: HASH}
            - {AttributeName: due_at, KeyType: RANGE}
          Projection: {ProjectionType: KEYS_ONLY}
      PointInTimeRecoverySpecification: {PointInTimeRecoveryEnabled: true}
      SSESpecification: {SSEEnabled: true}

  ColdBucket:
    Type: AWS::S3::Bucket
    DeletionPolicy: Retain
    UpdateReplacePolicy: Retain
    Properties:
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault: {SSEAlgorithm: AES256}
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: true

  DeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      SqsManagedSseEnabled: true
      MessageRetentionPeriod: 1209600

  OutlastLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      Description: Outlast runtime and its dependencies
      ContentUri: layer/
      CompatibleRuntimes: [python3.13]
      CompatibleArchitectures: [x86_64]
      RetentionPolicy: Delete
    Metadata:
      BuildMethod: makefile
      BuildArchitecture: x86_64
      ContextPath: .

  AgentFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: makefile
      ContextPath: .
    Properties:
      FunctionName: !Sub "${AWS::StackName}-agent"
      CodeUri: !Ref AppCodeUri
      Handler: outlast.platforms.lambda_entry.agent
      Timeout: !Ref LegTimeout
      MemorySize: 1024
      AutoPublishAlias: live
      RecursiveLoop: Allow
      DeadLetterQueue:
        Type: SQS
        TargetArn: !GetAtt DeadLetterQueue.Arn
      Environment:
        Variables:
          OUTLAST_APP: !Ref AppModule
          POWERTOOLS_SERVICE_NAME: outlast-agent
          OUTLAST_BEDROCK_MODEL_ID: !If [UseBedrock, !Ref BedrockModelId, !Ref AWS::NoValue]
          OPENAI_BASE_URL: !If [UseOpenAI, !Ref OpenAIBaseUrl, !Ref AWS::NoValue]
          OUTLAST_OPENAI_MODEL: !If [UseOpenAI, !Ref OpenAIModel, !Ref AWS::NoValue]
          OUTLAST_OPENAI_API_KEY_SECRET_ARN: !If [UseOpenAI, !Ref OpenAIApiKeySecretArn, !Ref AWS::NoValue]
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref HotTable}
        - S3CrudPolicy: {BucketName: !Ref ColdBucket}
        - !If
          - UseBedrock
          - Statement:
              - Effect: Allow
                Action: [bedrock:InvokeModel, bedrock:Converse, bedrock:ConverseStream]
                Resource: !Sub "arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/${BedrockModelId}"
          - !Ref AWS::NoValue
        - !If
          - UseOpenAI
          - Statement:
              - Effect: Allow
                Action: secretsmanager:GetSecretValue
                Resource: !Ref OpenAIApiKeySecretArn
          - !Ref AWS::NoValue
        - Statement:
            - Effect: Allow
              Action: lambda:InvokeFunction
              Resource: !Sub "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-agent:*"

  ApiFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: makefile
      ContextPath: .
    Properties:
      FunctionName: !Sub "${AWS::StackName}-api"
      CodeUri: !Ref AppCodeUri
      Handler: outlast.platforms.lambda_entry.api
      Timeout: 29
      Environment:
        Variables:
          OUTLAST_APP: !Ref AppModule
          OUTLAST_AGENT_VERSION_ARN: !Ref AgentFunction.Version
          POWERTOOLS_SERVICE_NAME: outlast-api
      Events:
        Runs:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Method: ANY, Path: /runs}
        Run:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Method: ANY, Path: "/runs/{proxy+}"}
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref HotTable}
        - S3CrudPolicy: {BucketName: !Ref ColdBucket}
        - Statement:
            - Effect: Allow
              Action: lambda:InvokeFunction
              Resource: !Sub "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-agent:*"

  SweeperFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: makefile
      ContextPath: .
    Properties:
      FunctionName: !Sub "${AWS::StackName}-sweeper"
      CodeUri: !Ref AppCodeUri
      Handler: outlast.platforms.lambda_entry.sweeper
      Timeout: 60
      Events:
        EveryMinute:
          Type: Schedule
          Properties: {Schedule: rate(1 minute)}
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref HotTable}
        - S3CrudPolicy: {BucketName: !Ref ColdBucket}
        - Statement:
            - Effect: Allow
              Action: lambda:InvokeFunction
              Resource: !Sub "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-agent:*"

  HttpApi:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        EnableIamAuthorizer: true
        DefaultAuthorizer: AWS_IAM

Outputs:
  ApiUrl:
    Value: !Sub "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
  HotUrl:
    Value: !Sub "dynamodb://${HotTable}?region=${AWS::Region}"
  ColdUrl:
    Value: !Sub "s3://${ColdBucket}/outlast?region=${AWS::Region}"
  DeadLetterQueueUrl:
    Value: !Ref DeadLetterQueue
"""

MAKEFILE = """\
# sam build's rules (BuildMethod: makefile). Function rules run in the function's CodeUri and
# pack it as it is; the layer rule packs Outlast from OUTLAST_SRC and its pinned dependencies as
# python3.13 manylinux wheels (no Docker, no python3.13 needed).
PYTHON ?= python3
OUTLAST_SRC ?= __OUTLAST_SRC__
COPY_EXCLUDES := --exclude=__pycache__ --exclude='*.pyc' --exclude=.aws-sam --exclude=.outlast

.PHONY: build-OutlastLayer build-AgentFunction build-ApiFunction build-SweeperFunction

build-OutlastLayer:
\tmkdir -p "$(ARTIFACTS_DIR)/python"
\t$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile \\
\t\t--platform manylinux2014_x86_64 --implementation cp --python-version 3.13 \\
\t\t--only-binary=:all: --target "$(ARTIFACTS_DIR)/python" --requirement requirements.txt
\trm -rf "$(ARTIFACTS_DIR)/python/bin" "$(ARTIFACTS_DIR)"/python/botocore* \\
\t\t"$(ARTIFACTS_DIR)"/python/boto3* "$(ARTIFACTS_DIR)"/python/s3transfer* \\
\t\t"$(ARTIFACTS_DIR)"/python/zstandard/_cffi.*.so
\ttar $(COPY_EXCLUDES) -C "$(OUTLAST_SRC)" -cf - outlast statestore | \\
\t\ttar -xf - -C "$(ARTIFACTS_DIR)/python"

define copy-code
\tmkdir -p "$(ARTIFACTS_DIR)"
\ttar $(COPY_EXCLUDES) -cf - . | tar -xf - -C "$(ARTIFACTS_DIR)"
endef

build-AgentFunction:
\t$(copy-code)

build-ApiFunction:
\t$(copy-code)

build-SweeperFunction:
\t$(copy-code)
"""

SAMCONFIG = """\
version = 0.1

[default.global.parameters]
stack_name = "__STACK__"

[default.build.parameters]
build_in_source = true

[default.validate.parameters]
lint = true

[default.deploy.parameters]
capabilities = "CAPABILITY_IAM"
resolve_s3 = true
confirm_changeset = true
parameter_overrides = ["AppModule=__MODULE__:app", "AppCodeUri=src/", "ModelProvider=none"]
"""

README = """\
# __MODULE__

A durable agent on [Outlast](https://github.com/) for AWS Lambda: `src/__MODULE__.py`.

```bash
outlast lambda invoke --event events/start.json --timeout 5   # run it here: no Docker, no AWS
sam build && sam deploy --guided                              # deploy it (needs an AWS account)
```

`outlast lambda invoke` runs the template's real handlers in local processes, kills them at the
timeout as Lambda does, and serves their hand-offs until the run ends (state in `.outlast/`).
To use a real model, deploy with `ModelProvider=bedrock BedrockModelId=...`, or
`ModelProvider=openai OpenAIApiKeySecretArn=arn:aws:secretsmanager:...`.
"""


def scaffold_lambda(
    directory: Path, *, module: str = "my_agent", force: bool = False
) -> list[Path]:
    """Write the project (module doc) into ``directory``; the files written."""
    if not _MODULE.match(module):
        raise ScaffoldError(f"module {module!r}: use a lower-case Python name (a-z, 0-9, _)")
    if directory.exists() and any(directory.iterdir()) and not force:
        raise ScaffoldError(f"{directory} is not empty (use --force to write into it)")
    import outlast

    outlast_src = Path(outlast.__file__).resolve().parent.parent
    stack = re.sub(r"[^A-Za-z0-9-]", "-", directory.resolve().name).strip("-") or "outlast-app"
    event = {"outlast": {"action": "start", "function": "ask", "run_id": "hello-1",
                         "input": "How does a durable run survive a Lambda timeout?"}}  # fmt: skip
    files = {
        "template.yaml": TEMPLATE,
        "samconfig.toml": SAMCONFIG,
        "Makefile": MAKEFILE.replace("__OUTLAST_SRC__", str(outlast_src)),
        "layer/requirements.txt": LAYER_REQUIREMENTS,
        f"src/{module}.py": AGENT,
        "events/start.json": json.dumps(event, indent=2) + "\n",
        "README.md": README,
    }
    written: list[Path] = []
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            text.replace("__MODULE__", module).replace("__STACK__", stack[:100]), encoding="utf-8"
        )
        written.append(path)
    return written
