#!/usr/bin/env node
// The CDK app: one stack, `Eventfold` (override with `-c stackName=...`).
// The functions' code comes from `sam build`'s output (`-c functionsDir=...`, default
// ../../.aws-sam/build), so SAM and CDK deploy the same binaries.
import * as path from "node:path";
import * as cdk from "aws-cdk-lib";
import { EventfoldStack } from "../lib/stack";

const app = new cdk.App();
const functionsDir = path.resolve(
  (app.node.tryGetContext("functionsDir") as string | undefined) ?? path.join(__dirname, "..", "..", "..", "..", ".aws-sam", "build"),
);
const stackName = (app.node.tryGetContext("stackName") as string | undefined) ?? "Eventfold";
new EventfoldStack(app, stackName, {
  functionsDir,
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
