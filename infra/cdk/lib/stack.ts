// The Eventfold stack in CDK: the same resources, settings and logical ids as
// infra/template.yaml after SAM's translation (scripts/check-cdk compares the two, so they
// cannot drift). Logical ids are pinned to SAM's names: the local tool, the alarms and the
// CLI's ops commands find resources by them, and a stack moved from SAM to CDK keeps its
// tables instead of replacing them.
//
// Level-1 constructs (Cfn*) where a level-2 construct would add something SAM does not
// (grants folded into a DefaultPolicy, generated names, extra permissions); level-2 where it
// maps one to one (functions and their code assets, roles).

import * as path from "node:path";
import * as fs from "node:fs";
import * as cdk from "aws-cdk-lib";
import { Construct } from "constructs";
import * as apigw from "aws-cdk-lib/aws-apigatewayv2";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as events from "aws-cdk-lib/aws-events";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import * as sns from "aws-cdk-lib/aws-sns";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { parse as parseYaml } from "yaml";

/**
 * A subscription's filter policy, read from infra/template.yaml so that what the saga and the
 * projector take is written once for infrastructure (the Rust side checks the template against
 * the saga's `INPUT_EVENT_TYPES` and the shop's views). CloudFormation's short-form tags
 * (`!Ref`, `!GetAtt`, ...) are kept as plain values: only a literal policy is read here.
 */
function templateFilterPolicy(subscription: string): Record<string, unknown[]> {
  // Compiled to dist/lib/stack.js: the template is infra/template.yaml.
  const file = path.join(__dirname, "..", "..", "..", "template.yaml");
  const shortForms = ["Ref", "GetAtt", "Sub", "If", "Equals", "Not", "And", "Or", "Select", "Join"];
  const tags = [...shortForms, "Split", "FindInMap", "Condition", "ImportValue", "Base64", "Cidr", "GetAZs"].map(
    (name) => ({ tag: `!${name}`, resolve: (value: unknown) => value }),
  );
  const template = parseYaml(fs.readFileSync(file, "utf8"), { customTags: tags }) as {
    Resources: Record<string, { Properties?: { FilterPolicy?: Record<string, unknown[]> } }>;
  };
  const policy = template.Resources[subscription]?.Properties?.FilterPolicy;
  if (!policy) {
    throw new Error(`${file}: ${subscription} has no FilterPolicy`);
  }
  return policy;
}

/** Settings of the stack that are not template parameters. */
export interface EventfoldStackProps extends cdk.StackProps {
  /**
   * Directory holding one `<LogicalId>/bootstrap` per function: the output of `sam build`
   * (`scripts/build-functions`), so SAM and CDK deploy the same binaries.
   */
  readonly functionsDir: string;
}

/** What every function statement list is made of (IAM JSON, as in the SAM template). */
type Statement = Record<string, unknown>;

interface FunctionSpec {
  /** Logical id, as in the SAM template (`CommandApiFunction`, ...). */
  readonly id: string;
  readonly description: string;
  readonly environment: Record<string, string>;
  readonly statements: Statement[];
  /** Statements Lambda needs for the function's event sources (ListStreams for a stream). */
  readonly eventSourceStatements?: Statement[];
  /** Seconds; the Globals default is 10. */
  readonly timeout?: number;
}

/** Active tracing: Lambda sends the function's segments with its role ("*" only). */
const XRAY_TRACES: Statement = {
  Sid: "XRayTraces",
  Effect: "Allow",
  Action: ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
  Resource: "*",
};

/** The whole Eventfold system: event store, fan-out, read side, saga, HTTP API, alarms. */
export class EventfoldStack extends cdk.Stack {
  constructor(scope: Construct, id: string, props: EventfoldStackProps) {
    super(scope, id, props);
    this.templateOptions.description =
      "Eventfold - event sourcing on AWS serverless (CDK app; same stack as infra/template.yaml).";

    // ------------------------------------------------------------------ Parameters
    const jwtIssuer = new cdk.CfnParameter(this, "JwtIssuer", {
      type: "String",
      description:
        "Issuer (iss) of the accepted access tokens, e.g. https://auth.example.com/ (API Gateway requires an https URL with a reachable OIDC discovery document).",
      allowedPattern: "^https://\\S+$",
      constraintDescription: "must be an https URL",
    });
    const jwtAudience = new cdk.CfnParameter(this, "JwtAudience", {
      type: "CommaDelimitedList",
      description: "Accepted audience (aud) values of the access tokens, comma-separated.",
    });
    const logLevel = new cdk.CfnParameter(this, "LogLevel", {
      type: "String",
      default: "info",
      allowedValues: ["error", "warn", "info", "debug", "trace"],
      description: "Log level of the functions (RUST_LOG).",
    });
    const snapshotEvery = new cdk.CfnParameter(this, "SnapshotEvery", {
      type: "Number",
      default: 100,
      minValue: 0,
      description: "Write a state snapshot every this many events of a stream (0 = never).",
    });
    const paymentTimeout = new cdk.CfnParameter(this, "PaymentTimeoutSeconds", {
      type: "Number",
      default: 900,
      minValue: 1,
      description:
        "How long the order-fulfilment saga waits for an asynchronous payment (or any other step with a deadline) before it compensates, in seconds.",
    });
    const idempotencyExpires = new cdk.CfnParameter(this, "IdempotencyExpiresSeconds", {
      type: "Number",
      default: 3600,
      minValue: 1,
      description:
        "How long a completed request's response is replayed to retries with the same Idempotency-Key, in seconds.",
    });

    // ---------------------------------------------------------------- Event store
    const eventsTable = new dynamodb.CfnTable(this, "EventsTable", {
      billingMode: "PAY_PER_REQUEST",
      attributeDefinitions: [
        { attributeName: "stream_id", attributeType: "S" },
        { attributeName: "version", attributeType: "N" },
      ],
      keySchema: [
        { attributeName: "stream_id", keyType: "HASH" },
        { attributeName: "version", keyType: "RANGE" },
      ],
      streamSpecification: { streamViewType: "NEW_IMAGE" },
      // Only streaming records (topic partitions) carry expires_at: their topic's retention.
      timeToLiveSpecification: { attributeName: "expires_at", enabled: true },
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      sseSpecification: { sseEnabled: true },
      deletionProtectionEnabled: true,
    });
    retain(eventsTable);

    const idempotencyTable = new dynamodb.CfnTable(this, "IdempotencyTable", {
      billingMode: "PAY_PER_REQUEST",
      attributeDefinitions: [{ attributeName: "pk", attributeType: "S" }],
      keySchema: [{ attributeName: "pk", keyType: "HASH" }],
      timeToLiveSpecification: { attributeName: "expires_at_epoch", enabled: true },
      sseSpecification: { sseEnabled: true },
    });
    disposable(idempotencyTable);

    // ------------------------------------------------------- Personal data keys
    // Crypto-shredding: KMS makes and wraps one data key per (tenant, subject); the wrapped
    // copy lives in the keys table, and a forget overwrites it with a tombstone.
    const personalDataKey = new kms.CfnKey(this, "PersonalDataKey", {
      description: "Wraps the per-subject data keys of personal fields (crypto-shredding).",
      enableKeyRotation: true,
      keyPolicy: {
        Version: "2012-10-17",
        Statement: [
          {
            Sid: "AccountAdministers",
            Effect: "Allow",
            Principal: { AWS: cdk.Fn.sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root") },
            Action: "kms:*",
            Resource: "*",
          },
        ],
      },
    });
    retain(personalDataKey);
    const keysTable = new dynamodb.CfnTable(this, "KeysTable", {
      billingMode: "PAY_PER_REQUEST",
      attributeDefinitions: [{ attributeName: "subject", attributeType: "S" }],
      keySchema: [{ attributeName: "subject", keyType: "HASH" }],
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      sseSpecification: { sseEnabled: true },
      deletionProtectionEnabled: true,
    });
    retain(keysTable);

    // ------------------------------------------------------------------ Read side
    const readModelsTable = new dynamodb.CfnTable(this, "ReadModelsTable", {
      billingMode: "PAY_PER_REQUEST",
      attributeDefinitions: [
        { attributeName: "pk", attributeType: "S" },
        { attributeName: "sk", attributeType: "S" },
        { attributeName: "gsi1pk", attributeType: "S" },
        { attributeName: "gsi1sk", attributeType: "S" },
      ],
      keySchema: [
        { attributeName: "pk", keyType: "HASH" },
        { attributeName: "sk", keyType: "RANGE" },
      ],
      globalSecondaryIndexes: [
        {
          indexName: "gsi1",
          keySchema: [
            { attributeName: "gsi1pk", keyType: "HASH" },
            { attributeName: "gsi1sk", keyType: "RANGE" },
          ],
          projection: { projectionType: "ALL" },
        },
      ],
      // Only a saga instance's deadline entry, once the instance no longer waits, carries
      // expires_at_epoch (30 days on): it turns away older writes only while one can still
      // arrive. Views and checkpoints never expire.
      timeToLiveSpecification: { attributeName: "expires_at_epoch", enabled: true },
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      sseSpecification: { sseEnabled: true },
    });
    retain(readModelsTable);

    // What the consumers gave up on (tenant-scoped), with their failure notes.
    const deadLettersTable = new dynamodb.CfnTable(this, "DeadLettersTable", {
      billingMode: "PAY_PER_REQUEST",
      attributeDefinitions: [
        { attributeName: "pk", attributeType: "S" },
        { attributeName: "sk", attributeType: "S" },
      ],
      keySchema: [
        { attributeName: "pk", keyType: "HASH" },
        { attributeName: "sk", keyType: "RANGE" },
      ],
      // Failure notes expire 14 days after they are written; redriven or discarded letters 90
      // days after their change; open letters never (they wait for an operator).
      timeToLiveSpecification: { attributeName: "expires_at_epoch", enabled: true },
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      sseSpecification: { sseEnabled: true },
    });
    retain(deadLettersTable);
    const failureNotes = allow("FailureNotes", "dynamodb:PutItem", deadLettersTable.attrArn);

    // ------------------------------------------------------------------ Streaming
    // Topics per tenant (pk = tenant, sk = name) and consumer-group offsets
    // (pk = {tenant}/{topic}, sk = group id); the records are streams of the events table.
    const streamingTable = (id: string) => {
      const table = new dynamodb.CfnTable(this, id, {
        billingMode: "PAY_PER_REQUEST",
        attributeDefinitions: [
          { attributeName: "pk", attributeType: "S" },
          { attributeName: "sk", attributeType: "S" },
        ],
        keySchema: [
          { attributeName: "pk", keyType: "HASH" },
          { attributeName: "sk", keyType: "RANGE" },
        ],
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        sseSpecification: { sseEnabled: true },
      });
      retain(table);
      return table;
    };
    const topicsTable = streamingTable("TopicsTable");
    const groupsTable = streamingTable("ConsumerGroupsTable");

    // -------------------------------------------------------------------- Fan-out
    const eventsTopic = new sns.CfnTopic(this, "EventsTopic", {
      topicName: cdk.Fn.sub("${AWS::StackName}-events.fifo"),
      fifoTopic: true,
      contentBasedDeduplication: false,
      // Throughput per message group (stream): topic scope caps the whole system at
      // 3,000 messages/s, and deduplication is per stream already.
      fifoThroughputScope: "MessageGroup",
      // Encrypted at rest with the AWS managed key: the publishers' roles need no KMS statement.
      kmsMasterKeyId: "alias/aws/sns",
    });

    const projectorDlq = this.deadLetterQueue("ProjectorDeadLetterQueue", "projector-dlq");
    const projectorQueue = this.consumerQueue("ProjectorQueue", "projector", projectorDlq);
    this.subscribe(
      "ProjectorSubscription",
      "ProjectorQueuePolicy",
      eventsTopic,
      projectorQueue,
      templateFilterPolicy("ProjectorSubscription"),
    );

    const sagaDlq = this.deadLetterQueue("SagaDeadLetterQueue", "saga-dlq");
    const sagaQueue = this.consumerQueue("SagaQueue", "saga", sagaDlq);
    this.subscribe(
      "SagaSubscription",
      "SagaQueuePolicy",
      eventsTopic,
      sagaQueue,
      templateFilterPolicy("SagaSubscription"),
    );

    const streamFailureQueue = new sqs.CfnQueue(this, "StreamFailureQueue", {
      // The DLQ processor republishes a description's commits; one whose commits still
      // fail comes back after 6 x the processor's timeout.
      visibilityTimeout: 60,
      messageRetentionPeriod: 1209600,
      sqsManagedSseEnabled: true,
    });

    // ------------------------------------------------------------------ Functions
    const rustLog = logLevel.valueAsString;
    const commandApi = this.rustFunction(props.functionsDir, rustLog, {
      id: "CommandApiFunction",
      description: "HTTP commands and aggregate reads (state, time travel, history).",
      environment: {
        EVENTS_TABLE: eventsTable.ref,
        SNAPSHOT_EVERY: snapshotEvery.valueAsString,
        IDEMPOTENCY_TABLE: idempotencyTable.ref,
        IDEMPOTENCY_EXPIRES_SECONDS: idempotencyExpires.valueAsString,
        KEYS_TABLE: keysTable.ref,
        PERSONAL_DATA_KEY: personalDataKey.attrArn,
      },
      statements: [
        allow("EventStoreReadAppend", ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:GetItem"], eventsTable.attrArn),
        allow(
          "IdempotencyRecordsCrud",
          ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"],
          idempotencyTable.attrArn,
        ),
        allow("KeysReadCreateForget", ["dynamodb:GetItem", "dynamodb:PutItem"], keysTable.attrArn),
        allow("PersonalDataKeyUse", ["kms:GenerateDataKey", "kms:Decrypt"], personalDataKey.attrArn),
      ],
    });

    const streamPublisher = this.rustFunction(props.functionsDir, rustLog, {
      id: "StreamPublisherFunction",
      description: "Events-table stream (INSERT records) -> one SNS FIFO message per event.",
      environment: { EVENTS_TOPIC_ARN: eventsTopic.ref },
      statements: [
        allow("PublishEvents", "sns:Publish", eventsTopic.ref),
        allow("WarmUpTopic", "sns:GetTopicAttributes", eventsTopic.ref),
        allow(
          "ReadEventsStream",
          ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
          eventsTable.attrStreamArn,
        ),
        allow("StreamOnFailureDestination", "sqs:SendMessage", streamFailureQueue.attrArn),
      ],
      // Lambda's stream poller lists the table's streams; ListStreams takes "*" only.
      eventSourceStatements: [allow("ListEventsStreams", "dynamodb:ListStreams", "*")],
    });
    new lambda.CfnEventSourceMapping(this, "StreamPublisherFunctionEventsStream", {
      functionName: streamPublisher.functionName,
      eventSourceArn: eventsTable.attrStreamArn,
      startingPosition: "TRIM_HORIZON",
      batchSize: 100,
      maximumBatchingWindowInSeconds: 0,
      // 1: above it Lambda keeps the order per item (a commit), not per stream (template).
      parallelizationFactor: 1,
      filterCriteria: { filters: [{ pattern: '{"eventName": ["INSERT"]}' }] },
      functionResponseTypes: ["ReportBatchItemFailures"],
      bisectBatchOnFunctionError: true,
      maximumRetryAttempts: 5,
      maximumRecordAgeInSeconds: 3600,
      destinationConfig: { onFailure: { destination: streamFailureQueue.attrArn } },
    });

    const projector = this.rustFunction(props.functionsDir, rustLog, {
      id: "ProjectorFunction",
      description: "Event notifications (SQS FIFO) -> read models, with per-stream checkpoints.",
      environment: {
        EVENTS_TABLE: eventsTable.ref,
        READ_MODELS_TABLE: readModelsTable.ref,
        DEAD_LETTERS_TABLE: deadLettersTable.ref,
        KEYS_TABLE: keysTable.ref,
        PERSONAL_DATA_KEY: personalDataKey.attrArn,
      },
      statements: [
        allow("EventStoreRead", "dynamodb:Query", eventsTable.attrArn),
        allow("KeysRead", "dynamodb:GetItem", keysTable.attrArn),
        allow("PersonalDataKeyDecrypt", "kms:Decrypt", personalDataKey.attrArn),
        allow(
          "ReadModelsWrite",
          ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
          readModelsTable.attrArn,
        ),
        // A batch's documents and checkpoints in one read (ReadModelStore::get_many):
        // without it every batch is denied and falls back to single GetItems.
        allow("ReadModelsBatchRead", ["dynamodb:BatchGetItem"], readModelsTable.attrArn),
        consume("ConsumeProjectorQueue", projectorQueue),
        failureNotes,
      ],
    });
    this.sqsSource("ProjectorFunctionNotifications", projector, projectorQueue, 100);

    const saga = this.rustFunction(props.functionsDir, rustLog, {
      id: "SagaFunction",
      description:
        "Saga inputs (SQS FIFO) -> saga steps and the commands they send, exactly once in effect; a schedule runs the deadlines.",
      environment: {
        EVENTS_TABLE: eventsTable.ref,
        READ_MODELS_TABLE: readModelsTable.ref,
        SNAPSHOT_EVERY: snapshotEvery.valueAsString,
        SAGA_TIMEOUT_SECONDS: paymentTimeout.valueAsString,
        DEAD_LETTERS_TABLE: deadLettersTable.ref,
      },
      statements: [
        allow("EventStoreReadAppend", ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:GetItem"], eventsTable.attrArn),
        allow(
          "ReadModelsCheckpointsAndDeadlines",
          [
            "dynamodb:BatchGetItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
          ],
          [readModelsTable.attrArn, cdk.Fn.sub("${ReadModelsTable.Arn}/index/gsi1")],
        ),
        consume("ConsumeSagaQueue", sagaQueue),
        failureNotes,
      ],
    });
    this.sqsSource("SagaFunctionInputs", saga, sagaQueue, 100);
    this.schedule("SagaFunctionDeadlines", saga, "rate(1 minute)", "Runs the saga deadlines that have passed.");

    const queryApi = this.rustFunction(props.functionsDir, rustLog, {
      id: "QueryApiFunction",
      description: "HTTP reads of the read models (cursor paging).",
      environment: { READ_MODELS_TABLE: readModelsTable.ref },
      statements: [
        allow(
          "ReadModelsRead",
          ["dynamodb:GetItem", "dynamodb:Query"],
          [readModelsTable.attrArn, cdk.Fn.sub("${ReadModelsTable.Arn}/index/gsi1")],
        ),
      ],
    });

    // The DLQs and the stream's on-failure queue -> dead letters; the dead-letters API.
    const dlqProcessor = this.rustFunction(props.functionsDir, rustLog, {
      id: "DlqProcessorFunction",
      description:
        "DLQs and the stream's on-failure queue -> dead letters (failed stream batches republished automatically); the dead-letters API (list, show, redrive, discard).",
      environment: {
        DEAD_LETTERS_TABLE: deadLettersTable.ref,
        EVENTS_TABLE: eventsTable.ref,
        EVENTS_TOPIC_ARN: eventsTopic.ref,
        PROJECTOR_DLQ_ARN: projectorDlq.attrArn,
        SAGA_DLQ_ARN: sagaDlq.attrArn,
        STREAM_FAILURE_QUEUE_ARN: streamFailureQueue.attrArn,
        PROJECTOR_QUEUE_URL: projectorQueue.ref,
        SAGA_QUEUE_URL: sagaQueue.ref,
        STREAM_RETRY_RECEIVES: "10",
      },
      statements: [
        allow(
          "DeadLetters",
          ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"],
          deadLettersTable.attrArn,
        ),
        allow("EventStoreRead", "dynamodb:Query", eventsTable.attrArn),
        allow("ReadEventsStream", ["dynamodb:GetRecords", "dynamodb:GetShardIterator"], eventsTable.attrStreamArn),
        allow("Republish", "sns:Publish", eventsTopic.ref),
        allow("Redrive", "sqs:SendMessage", [projectorQueue.attrArn, sagaQueue.attrArn]),
        allow(
          "ConsumeDeadLetterQueues",
          ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
          [projectorDlq.attrArn, sagaDlq.attrArn, streamFailureQueue.attrArn],
        ),
      ],
    });
    this.sqsSource("DlqProcessorFunctionProjectorDeadLetters", dlqProcessor, projectorDlq, 2);
    this.sqsSource("DlqProcessorFunctionSagaDeadLetters", dlqProcessor, sagaDlq, 2);
    // One failed stream batch at a time: each is a republish with its own backoff.
    this.sqsSource("DlqProcessorFunctionStreamFailures", dlqProcessor, streamFailureQueue, 2, 1);

    const streamsApi = this.rustFunction(props.functionsDir, rustLog, {
      id: "StreamsApiFunction",
      description: "The event-streaming HTTP API: topics, publish, consume with consumer groups, lag, history.",
      environment: {
        EVENTS_TABLE: eventsTable.ref,
        TOPICS_TABLE: topicsTable.ref,
        CONSUMER_GROUPS_TABLE: groupsTable.ref,
        IDEMPOTENCY_TABLE: idempotencyTable.ref,
        IDEMPOTENCY_EXPIRES_SECONDS: idempotencyExpires.valueAsString,
      },
      statements: [
        allow("EventStoreReadAppend", ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:GetItem"], eventsTable.attrArn),
        allow(
          "TopicsCatalogue",
          ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
          topicsTable.attrArn,
        ),
        allow("ConsumerGroupOffsets", ["dynamodb:GetItem", "dynamodb:PutItem"], groupsTable.attrArn),
        allow(
          "IdempotencyRecordsCrud",
          ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"],
          idempotencyTable.attrArn,
        ),
      ],
      // A consume long-polls up to 20 s and must still answer within API Gateway's 30 s.
      timeout: 28,
    });

    // ------------------------------------------------------------------- HTTP API
    const accessLogs = new logs.CfnLogGroup(this, "HttpApiAccessLogGroup", { retentionInDays: 14 });
    disposable(accessLogs);
    const api = new apigw.CfnApi(this, "HttpApi", {
      name: cdk.Aws.STACK_NAME,
      protocolType: "HTTP",
      description: "Eventfold command and aggregate API (contract in infra/openapi.yaml).",
      failOnWarnings: true,
    });
    new apigw.CfnStage(this, "HttpApiApiGatewayDefaultStage", {
      apiId: api.ref,
      stageName: "$default",
      autoDeploy: true,
      accessLogSettings: {
        destinationArn: accessLogs.attrArn,
        format:
          '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp", "requestTime":"$context.requestTime","httpMethod":"$context.httpMethod", "routeKey":"$context.routeKey","path":"$context.path","status":"$context.status", "protocol":"$context.protocol","responseLength":"$context.responseLength", "integrationLatency":"$context.integrationLatency", "integrationStatus":"$context.integrationStatus", "integrationError":"$context.integrationErrorMessage", "authorizerError":"$context.authorizer.error", "sub":"$context.authorizer.claims.sub"}',
      },
    });
    const authorizer = new apigw.CfnAuthorizer(this, "HttpApiJwtAuth", {
      apiId: api.ref,
      name: "JwtAuth",
      authorizerType: "JWT",
      identitySource: ["$request.header.Authorization"],
      jwtConfiguration: { issuer: jwtIssuer.valueAsString, audience: jwtAudience.valueAsList },
    });
    const route = (fn: lambda.Function, name: string, method: string, routePath: string) =>
      this.route(api, authorizer, fn, name, method, routePath);
    route(commandApi, "SubmitCommand", "POST", "/api/v1/events/commands");
    route(commandApi, "GetAggregate", "GET", "/api/v1/events/aggregates/{aggregate_type}/{aggregate_id}");
    route(
      commandApi,
      "ListAggregateEvents",
      "GET",
      "/api/v1/events/aggregates/{aggregate_type}/{aggregate_id}/events",
    );
    route(commandApi, "ForgetSubject", "POST", "/api/v1/events/subjects/{subject_id}/forget");
    route(commandApi, "ExportSubject", "GET", "/api/v1/events/subjects/{subject_id}");
    route(queryApi, "GetQuery", "GET", "/api/v1/events/queries/{view}");
    route(dlqProcessor, "ListDeadLetters", "GET", "/api/v1/events/dead-letters");
    route(dlqProcessor, "ShowDeadLetter", "GET", "/api/v1/events/dead-letters/{id}");
    route(dlqProcessor, "RedriveDeadLetter", "POST", "/api/v1/events/dead-letters/{id}/redrive");
    route(dlqProcessor, "DiscardDeadLetter", "POST", "/api/v1/events/dead-letters/{id}/discard");
    route(streamsApi, "ListTopics", "GET", "/api/v1/events/topics");
    route(streamsApi, "CreateTopic", "POST", "/api/v1/events/topics");
    route(streamsApi, "GetTopic", "GET", "/api/v1/events/topics/{topic}");
    route(streamsApi, "Publish", "POST", "/api/v1/events/publish");
    route(streamsApi, "Consume", "GET", "/api/v1/events/consume");
    route(streamsApi, "CommitOffsets", "POST", "/api/v1/events/consume/commit");
    route(streamsApi, "SeekGroup", "POST", "/api/v1/events/consume/seek");
    route(streamsApi, "JoinGroup", "POST", "/api/v1/events/consume/join");
    route(streamsApi, "GroupHeartbeat", "POST", "/api/v1/events/consume/heartbeat");
    route(streamsApi, "LeaveGroup", "POST", "/api/v1/events/consume/leave");
    route(streamsApi, "GroupLag", "GET", "/api/v1/events/consume/lag");
    route(streamsApi, "History", "GET", "/api/v1/events/history");

    // --------------------------------------------------------------------- Alarms
    this.functionErrorsAlarm("CommandApiErrorsAlarm", commandApi);
    this.functionErrorsAlarm("SagaErrorsAlarm", saga);
    this.functionErrorsAlarm("StreamPublisherErrorsAlarm", streamPublisher);
    this.functionErrorsAlarm("ProjectorErrorsAlarm", projector);
    this.functionErrorsAlarm("QueryApiErrorsAlarm", queryApi);
    this.functionErrorsAlarm("StreamsApiErrorsAlarm", streamsApi);
    // Answered failures (503, 500) do not count as Lambda Errors; API Gateway's 5xx does.
    this.alarm("HttpApi5xxAlarm", "AWS/ApiGateway", "5xx", { ApiId: api.ref, Stage: "$default" }, {
      statistic: "Sum",
      period: 300,
      evaluationPeriods: 1,
      threshold: 5,
      comparisonOperator: "GreaterThanOrEqualToThreshold",
    });
    // Consumer lag (EMF, namespace Eventfold): a minute for 5 minutes means a stuck fan-out.
    for (const [id, consumer] of [
      ["ProjectorLagAlarm", "projector"],
      ["SagaLagAlarm", "saga"],
    ]) {
      this.alarm(id, "Eventfold", "consumer_lag", { function: consumer, consumer }, {
        statistic: "Maximum",
        period: 60,
        evaluationPeriods: 5,
        threshold: 60000,
        comparisonOperator: "GreaterThanThreshold",
      });
    }
    // A stopped consumer reports no lag: the oldest message's age catches it.
    for (const [id, queue] of [
      ["ProjectorQueueAgeAlarm", projectorQueue],
      ["SagaQueueAgeAlarm", sagaQueue],
    ] as const) {
      this.alarm(id, "AWS/SQS", "ApproximateAgeOfOldestMessage", { QueueName: queue.attrQueueName }, {
        statistic: "Maximum",
        period: 60,
        evaluationPeriods: 5,
        threshold: 300,
        comparisonOperator: "GreaterThanThreshold",
      });
    }
    this.queueDepthAlarm("ProjectorDeadLettersAlarm", projectorDlq);
    this.queueDepthAlarm("SagaDeadLettersAlarm", sagaDlq);
    this.queueDepthAlarm("StreamFailuresAlarm", streamFailureQueue);
    this.alarm("StreamPublisherIteratorAgeAlarm", "AWS/Lambda", "IteratorAge", {
      FunctionName: streamPublisher.functionName,
    }, {
      statistic: "Maximum",
      period: 60,
      evaluationPeriods: 5,
      threshold: 60000,
      comparisonOperator: "GreaterThanThreshold",
    });

    this.functionErrorsAlarm("DlqProcessorErrorsAlarm", dlqProcessor);
    // Any dead letter recorded (EMF dead_letters per consumer, each missing series as 0).
    const deadLetters = (consumer: string) => ({
      metric: {
        namespace: "Eventfold",
        metricName: "dead_letters",
        dimensions: [
          { name: "function", value: "dlq-processor" },
          { name: "consumer", value: consumer },
        ],
      },
      period: 300,
      stat: "Sum",
    });
    new cloudwatch.CfnAlarm(this, "DeadLettersRecordedAlarm", {
      metrics: [
        {
          id: "total",
          label: "dead letters recorded",
          expression: "FILL(projector, 0) + FILL(saga, 0) + FILL(stream, 0)",
          returnData: true,
        },
        { id: "projector", returnData: false, metricStat: deadLetters("projector") },
        { id: "saga", returnData: false, metricStat: deadLetters("saga") },
        { id: "stream", returnData: false, metricStat: deadLetters("stream-publisher") },
      ],
      evaluationPeriods: 1,
      threshold: 1,
      comparisonOperator: "GreaterThanOrEqualToThreshold",
      treatMissingData: "notBreaching",
    });

    // -------------------------------------------------------------------- Outputs
    const output = (name: string, description: string, value: string) =>
      new cdk.CfnOutput(this, name, { description, value });
    output(
      "ApiUrl",
      "Base URL of the HTTP API ($default stage).",
      cdk.Fn.sub("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"),
    );
    output("EventsTableName", "Name of the events table.", eventsTable.ref);
    output("EventsTableStreamArn", "ARN of the events table's DynamoDB stream (NEW_IMAGE).", eventsTable.attrStreamArn);
    output("EventsTopicArn", "ARN of the SNS FIFO topic carrying one message per event.", eventsTopic.ref);
    output("ProjectorQueueUrl", "URL of the projector's SQS FIFO queue.", projectorQueue.ref);
    output("SagaQueueUrl", "URL of the saga's SQS FIFO queue (filtered saga inputs).", sagaQueue.ref);
    output("ReadModelsTableName", "Name of the read-models table.", readModelsTable.ref);
    output(
      "DeadLettersTableName",
      "Name of the dead-letters table (what the consumers gave up on).",
      deadLettersTable.ref,
    );
    output("IdempotencyTableName", "Name of the idempotency table (Idempotency-Key records).", idempotencyTable.ref);
    output("TopicsTableName", "Name of the streaming topics table.", topicsTable.ref);
    output("ConsumerGroupsTableName", "Name of the consumer-group offsets table.", groupsTable.ref);
    output(
      "ProjectorDeadLetterQueueUrl",
      "URL of the projector's dead-letter queue (empty while the projector keeps up).",
      projectorDlq.ref,
    );
    output(
      "SagaDeadLetterQueueUrl",
      "URL of the saga's dead-letter queue (empty while the saga keeps up).",
      sagaDlq.ref,
    );
    output(
      "StreamFailureQueueUrl",
      "URL of the events stream's on-failure queue (batches the publisher gave up on).",
      streamFailureQueue.ref,
    );
    output(
      "StreamPublisherFunctionName",
      "Name of the stream publisher (its IteratorAge metric is its lag; the console reads it).",
      streamPublisher.functionName,
    );
  }

  /** A Rust function (`provided.al2023`, arm64) with its role and its log group. */
  private rustFunction(functionsDir: string, rustLog: string, spec: FunctionSpec): lambda.Function {
    // The template's explicit role (no managed policies: SAM's grant on "*"): the function's
    // statements, what its event sources need, X-Ray; logs in a policy of its own below.
    const role = new iam.Role(this, `${spec.id}Role`, {
      assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      inlinePolicies: {
        [`${spec.id}RolePolicy0`]: iam.PolicyDocument.fromJson({
          Version: "2012-10-17",
          Statement: [...spec.statements, ...(spec.eventSourceStatements ?? []), XRAY_TRACES],
        }),
      },
    });
    pin(role, `${spec.id}Role`);
    const code = path.join(functionsDir, spec.id);
    if (!fs.existsSync(path.join(code, "bootstrap"))) {
      throw new Error(`${code}/bootstrap not found: run scripts/build-functions first (sam build)`);
    }
    const fn = new lambda.Function(this, spec.id, {
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: "bootstrap",
      code: lambda.Code.fromAsset(code),
      memorySize: 256,
      timeout: cdk.Duration.seconds(spec.timeout ?? 10),
      description: spec.description,
      // The role's policies are the statements above, exactly: no grants folded in.
      role: role.withoutPolicyUpdates(),
      environment: { RUST_LOG: rustLog, ...spec.environment },
    });
    const cfn = pin(fn, spec.id) as lambda.CfnFunction;
    cfn.tracingConfig = { mode: "Active" };
    const logGroup = new logs.CfnLogGroup(this, spec.id.replace(/Function$/, "LogGroup"), {
      logGroupName: cdk.Fn.sub(`/aws/lambda/\${${spec.id}}`),
      retentionInDays: 14,
    });
    disposable(logGroup);
    // Logs into the function's own group only; a policy of its own, as in the template (in
    // the role it would reference the group, named after the function, which needs the role).
    new iam.CfnPolicy(this, `${spec.id}LogsPolicy`, {
      policyName: `${spec.id}Logs`,
      roles: [role.roleName],
      policyDocument: {
        Version: "2012-10-17",
        Statement: [allow("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], logGroup.attrArn)],
      },
    });
    return fn;
  }

  private deadLetterQueue(id: string, name: string): sqs.CfnQueue {
    return new sqs.CfnQueue(this, id, {
      queueName: cdk.Fn.sub(`\${AWS::StackName}-${name}.fifo`),
      fifoQueue: true,
      contentBasedDeduplication: false,
      messageRetentionPeriod: 1209600,
      sqsManagedSseEnabled: true,
    });
  }

  /** A consumer's high-throughput FIFO queue, redriving to `dlq` after 5 receives. */
  private consumerQueue(id: string, name: string, dlq: sqs.CfnQueue): sqs.CfnQueue {
    return new sqs.CfnQueue(this, id, {
      queueName: cdk.Fn.sub(`\${AWS::StackName}-${name}.fifo`),
      fifoQueue: true,
      contentBasedDeduplication: false,
      deduplicationScope: "messageGroup",
      fifoThroughputLimit: "perMessageGroupId",
      // 6 x the consumer's timeout (10 s), as Lambda recommends.
      visibilityTimeout: 60,
      messageRetentionPeriod: 345600,
      sqsManagedSseEnabled: true,
      redrivePolicy: { deadLetterTargetArn: dlq.attrArn, maxReceiveCount: 5 },
    });
  }

  /** Raw delivery of `topic` into `queue` (optionally filtered), and the queue policy it needs. */
  private subscribe(
    id: string,
    policyId: string,
    topic: sns.CfnTopic,
    queue: sqs.CfnQueue,
    filterPolicy?: Record<string, unknown[]>,
  ): void {
    new sns.CfnSubscription(this, id, {
      topicArn: topic.ref,
      protocol: "sqs",
      endpoint: queue.attrArn,
      rawMessageDelivery: true,
      ...(filterPolicy ? { filterPolicyScope: "MessageAttributes", filterPolicy } : {}),
    });
    new sqs.CfnQueuePolicy(this, policyId, {
      queues: [queue.ref],
      policyDocument: {
        Version: "2012-10-17",
        Statement: [
          {
            Sid: "EventsTopicDelivers",
            Effect: "Allow",
            Principal: { Service: "sns.amazonaws.com" },
            Action: "sqs:SendMessage",
            Resource: queue.attrArn,
            Condition: { ArnEquals: { "aws:SourceArn": topic.ref } },
          },
        ],
      },
    });
  }

  /** An SQS mapping; `maximumConcurrency` caps its invocations at once (the template says why). */
  private sqsSource(
    id: string,
    fn: lambda.Function,
    queue: sqs.CfnQueue,
    maximumConcurrency: number,
    batchSize = 10,
  ): void {
    new lambda.CfnEventSourceMapping(this, id, {
      functionName: fn.functionName,
      eventSourceArn: queue.attrArn,
      batchSize,
      functionResponseTypes: ["ReportBatchItemFailures"],
      scalingConfig: { maximumConcurrency },
    });
  }

  private schedule(id: string, fn: lambda.Function, expression: string, description: string): void {
    const rule = new events.CfnRule(this, id, {
      description,
      scheduleExpression: expression,
      state: "ENABLED",
      targets: [{ arn: fn.functionArn, id: `${id}LambdaTarget` }],
    });
    new lambda.CfnPermission(this, `${id}Permission`, {
      action: "lambda:InvokeFunction",
      functionName: fn.functionName,
      principal: "events.amazonaws.com",
      sourceArn: rule.attrArn,
    });
  }

  /** One route of the HTTP API to `fn` (Lambda proxy, payload 2.0), behind the JWT authorizer. */
  private route(
    api: apigw.CfnApi,
    authorizer: apigw.CfnAuthorizer,
    fn: lambda.Function,
    name: string,
    method: string,
    routePath: string,
  ): void {
    const integration = new apigw.CfnIntegration(this, `${fn.node.id}${name}Integration`, {
      apiId: api.ref,
      integrationType: "AWS_PROXY",
      integrationUri: fn.functionArn,
      payloadFormatVersion: "2.0",
    });
    new apigw.CfnRoute(this, `${fn.node.id}${name}Route`, {
      apiId: api.ref,
      routeKey: `${method} ${routePath}`,
      target: cdk.Fn.join("/", ["integrations", integration.ref]),
      authorizationType: "JWT",
      authorizerId: authorizer.ref,
    });
    new lambda.CfnPermission(this, `${fn.node.id}${name}Permission`, {
      action: "lambda:InvokeFunction",
      functionName: fn.functionName,
      principal: "apigateway.amazonaws.com",
      sourceArn: cdk.Fn.sub(
        // Path parameters match any segment in the invocation ARN.
        `arn:\${AWS::Partition}:execute-api:\${AWS::Region}:\${AWS::AccountId}:\${HttpApi}/*/${method}${routePath.replace(/\{[^}]+\}/g, "*")}`,
      ),
    });
  }

  /** An alarm on one metric; missing data (no traffic) is not a breach. */
  private alarm(
    id: string,
    namespace: string,
    metricName: string,
    dimensions: Record<string, string>,
    rule: Pick<
      cloudwatch.CfnAlarmProps,
      "statistic" | "period" | "evaluationPeriods" | "threshold" | "comparisonOperator"
    >,
  ): void {
    new cloudwatch.CfnAlarm(this, id, {
      namespace,
      metricName,
      dimensions: Object.entries(dimensions).map(([name, value]) => ({ name, value })),
      ...rule,
      treatMissingData: "notBreaching",
    });
  }

  /** Any failed invocation of `fn` in 5 minutes. */
  private functionErrorsAlarm(id: string, fn: lambda.Function): void {
    this.alarm(id, "AWS/Lambda", "Errors", { FunctionName: fn.functionName }, {
      statistic: "Sum",
      period: 300,
      evaluationPeriods: 1,
      threshold: 1,
      comparisonOperator: "GreaterThanOrEqualToThreshold",
    });
  }

  /** Anything waiting in `queue` (a DLQ or the stream's on-failure queue). */
  private queueDepthAlarm(id: string, queue: sqs.CfnQueue): void {
    this.alarm(id, "AWS/SQS", "ApproximateNumberOfMessagesVisible", { QueueName: queue.attrQueueName }, {
      statistic: "Maximum",
      period: 300,
      evaluationPeriods: 1,
      threshold: 1,
      comparisonOperator: "GreaterThanOrEqualToThreshold",
    });
  }
}

/** An IAM statement as the SAM template writes it. */
function allow(sid: string, action: string | string[], resource: string | string[]): Statement {
  return { Sid: sid, Effect: "Allow", Action: action, Resource: resource };
}

function consume(sid: string, queue: sqs.CfnQueue): Statement {
  return allow(
    sid,
    ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
    queue.attrArn,
  );
}

/** Pins the CloudFormation logical id of `construct`'s resource to `id` (SAM's name). */
function pin(construct: Construct, id: string): cdk.CfnResource {
  const cfn = construct.node.defaultChild as cdk.CfnResource;
  cfn.overrideLogicalId(id);
  return cfn;
}

/** Data that must outlive the stack (and a replacement): the events and the read models. */
function retain(resource: cdk.CfnResource): void {
  resource.applyRemovalPolicy(cdk.RemovalPolicy.RETAIN);
}

/** Bounded, rebuildable or expiring data: removed with the stack. */
function disposable(resource: cdk.CfnResource): void {
  resource.applyRemovalPolicy(cdk.RemovalPolicy.DESTROY);
}
